def main():
    print("isaac-perf")

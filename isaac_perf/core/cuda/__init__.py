"""CUDA: one runtime interface (torch, cuda-python, CPU, simulated), streams and event traces, pinned and
device memory pools.
"""

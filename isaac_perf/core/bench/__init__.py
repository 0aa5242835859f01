"""Bench: ros2_benchmark-style metrics, peak-throughput search, result comparison and provenance."""

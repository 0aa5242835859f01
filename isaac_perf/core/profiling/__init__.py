"""Profiling: the per-stage profiler, Python samplers (py-spy, threads, cProfile) and the bottleneck
report.
"""

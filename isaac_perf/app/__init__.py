"""Command implementations behind `isaac-perf` (one module per sub-command)."""

"""Telemetry: bounded stream/stage statistics, the one NVML gateway, host sampling, alerts, the
/performance_metrics layout, the stage-time report format and health statuses.
"""

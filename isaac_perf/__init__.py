"""isaac_perf: measure, run and tune GPU perception pipelines on ROS 2."""

__version__ = '0.1.0'

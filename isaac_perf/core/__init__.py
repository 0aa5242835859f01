"""isaac_perf.core: the ROS-free library (no rclpy anywhere below). One subpackage per subsystem."""

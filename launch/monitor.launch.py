"""Launch perf_monitor with its parameters file.

    ros2 launch isaac_perf monitor.launch.py
    ros2 launch isaac_perf monitor.launch.py params_file:=/path/to/perf_monitor.yaml \
        watched_topics:="['/camera/image_raw']"

`watched_topics` (a YAML list in a string) overrides the file, since a params file cannot hold the
empty list that is the default.
"""
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from isaac_perf.core.dds_profile import dds_environment


def _monitor(context, *args, **kwargs):
    import yaml

    params = [LaunchConfiguration('params_file').perform(context)]
    topics = yaml.safe_load(LaunchConfiguration('watched_topics').perform(context) or '[]') or []
    if topics:
        params.append({'watched_topics': [str(t) for t in topics]})
    return [Node(package='isaac_perf', executable='perf_monitor', name='perf_monitor', output='screen',
                 additional_env=dds_environment(),  # the large-frame DDS profile
                 parameters=params, arguments=['--ros-args', '--log-level',
                                               LaunchConfiguration('log_level').perform(context)])]


def generate_launch_description():
    default_params = str(Path(get_package_share_directory('isaac_perf')) / 'config' / 'perf_monitor.yaml')
    return LaunchDescription([
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='perf_monitor parameters (ROS params-file format)'),
        DeclareLaunchArgument('watched_topics', default_value='[]',
                              description="topics to watch, as a YAML list, e.g. \"['/camera/image_raw']\""),
        DeclareLaunchArgument('log_level', default_value='info', description='debug, info, warn or error'),
        OpaqueFunction(function=_monitor),
    ])

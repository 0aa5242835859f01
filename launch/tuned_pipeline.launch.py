"""N cameras -> stream_batcher, watched by perf_monitor and tuned live by qos_tuner.

    ros2 launch isaac_perf tuned_pipeline.launch.py cameras:=8 rate_hz:=30.0 latency_budget_ms:=33.0
    ros2 launch isaac_perf tuned_pipeline.launch.py tuned_params:=~/.ros/isaac_perf/tuned_stream_batcher.yaml
    ros2 launch isaac_perf tuned_pipeline.launch.py advise_only:=true

The tuner writes what it settles on to `tuned_params_out` (a ROS 2 params file for /stream_batcher). Give
that file back as `tuned_params` on the next launch and the batcher starts tuned: it is applied after
`pipeline_params`, so its values win. The monitor runs with a 2 s window and the tuner with a 3 s settle
time, so each tuning step sees only windows measured with its own setting (settle >= window + period).
The wiring is isaac_perf.core.pipeline_graph.tuned_pipeline_nodes.
"""
import os
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

DEFAULT_TUNED = '~/.ros/isaac_perf/tuned_stream_batcher.yaml'


def _nodes(context, *args, **kwargs):
    from isaac_perf.core.pipeline_graph import tuned_pipeline_nodes

    def arg(name):
        return LaunchConfiguration(name).perform(context)

    tuner = {'latency_budget_ms': float(arg('latency_budget_ms')),
             'advise_only': arg('advise_only').lower() in ('true', '1', 'yes'),
             'output_config_path': os.path.expanduser(arg('tuned_params_out'))}
    graph = tuned_pipeline_nodes(int(arg('cameras')), float(arg('rate_hz')), arg('pipeline_params'),
                                 arg('tuner_params'), os.path.expanduser(arg('tuned_params')), tuner)
    log = ['--ros-args', '--log-level', arg('log_level')]
    return [Node(package='isaac_perf', executable=n.executable, name=n.name, output='screen',
                 parameters=list(n.parameters), arguments=log) for n in graph]


def generate_launch_description():
    share = Path(get_package_share_directory('isaac_perf'))
    return LaunchDescription([
        DeclareLaunchArgument('cameras', default_value='8', description='number of synthetic cameras'),
        DeclareLaunchArgument('rate_hz', default_value='30.0', description='frames per second per camera'),
        DeclareLaunchArgument('latency_budget_ms', default_value='33.0', description='p99 budget in ms'),
        DeclareLaunchArgument('advise_only', default_value='false',
                              description='true: the tuner only publishes what it would change'),
        DeclareLaunchArgument('pipeline_params', default_value=str(share / 'config' / 'pipeline.yaml'),
                              description='params file for image_source and stream_batcher'),
        DeclareLaunchArgument('tuner_params', default_value=str(share / 'config' / 'qos_tuner.yaml'),
                              description='qos_tuner parameters (bounds, fields, hysteresis)'),
        DeclareLaunchArgument('tuned_params', default_value=DEFAULT_TUNED,
                              description='a tuned params file from an earlier run (used when it exists)'),
        DeclareLaunchArgument('tuned_params_out', default_value=DEFAULT_TUNED,
                              description='where the tuner writes what it settles on'),
        DeclareLaunchArgument('log_level', default_value='info', description='debug, info, warn or error'),
        OpaqueFunction(function=_nodes),
    ])

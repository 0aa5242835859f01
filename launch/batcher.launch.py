"""image_source (N cameras) -> stream_batcher -> perf_monitor.

    ros2 launch isaac_perf batcher.launch.py num_cameras:=8 rate_hz:=30.0
    ros2 launch isaac_perf batcher.launch.py params_file:=/path/to/my_stream_batcher.yaml

The cameras publish /camera_{i}/image_raw (i = 0..num_cameras-1) on one timer, like a synchronised rig;
stream_batcher subscribes exactly those topics (its params file is read first, then the camera list and
the arguments below override it) and publishes /camera_{i}/image_raw/detections (inference_node's
<input topic>/detections rule) plus ~/stage_times, which perf_monitor picks up by name. The wiring
is isaac_perf.core.pipeline_graph.batcher_nodes (the module `isaac-perf run` uses). Written against
launch / launch_ros's documented API (LaunchDescription, DeclareLaunchArgument, OpaqueFunction,
launch_ros.actions.Node).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from isaac_perf.core.paths import config_file
from isaac_perf.core.pipeline_graph import batcher_nodes

ARGUMENTS = {
    'num_cameras': ('8', 'Cameras published by image_source and batched by stream_batcher.'),
    'rate_hz': ('30.0', 'Frames per second per camera.'),
    'width': ('640', 'Image width.'),
    'height': ('480', 'Image height.'),
    'params_file': (str(config_file('stream_batcher.yaml')), 'stream_batcher parameters file.'),
    'monitor_params_file': (str(config_file('perf_monitor.yaml')), 'perf_monitor parameters file.'),
    'max_batch_size': ('8', 'stream_batcher max_batch_size.'),
    'max_queue_delay_ms': ('5.0', 'stream_batcher max_queue_delay_ms.'),
    'num_streams': ('2', 'stream_batcher num_streams.'),
    'backend': ('auto', 'stream_batcher backend (auto, onnxruntime, torch, tensorrt).'),
    'model': ('resnet50', 'stream_batcher model (resnet50, detector).'),
}


def _nodes(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    batcher = {'max_batch_size': int(value['max_batch_size']),
               'max_queue_delay_ms': float(value['max_queue_delay_ms']),
               'num_streams': int(value['num_streams']), 'backend': value['backend'], 'model': value['model']}
    graph = batcher_nodes(int(value['num_cameras']), float(value['rate_hz']), int(value['width']),
                          int(value['height']), value['params_file'], value['monitor_params_file'], batcher)
    return [Node(package='isaac_perf', executable=n.executable, name=n.name, output='screen',
                 parameters=list(n.parameters)) for n in graph]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)])

"""The perception pipeline: image_source -> inference_node -> results, with perf_monitor watching.

    ros2 launch isaac_perf pipeline.launch.py
    ros2 launch isaac_perf pipeline.launch.py backend:=torch model:=detector num_cameras:=4 rate_hz:=30.0
    ros2 launch isaac_perf pipeline.launch.py params_file:=/path/to/my_pipeline.yaml

Parameters come from config/pipeline.yaml (or `params_file`); the launch arguments, when given, override
it. The topic wiring (the inference node subscribes every camera; the monitor watches the cameras and
the result topics, expecting rate_hz) is computed by the module `isaac-perf run` uses
(isaac_perf.core.pipeline_graph), so both ways of starting the pipeline run the same graph.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

ARGUMENTS = {
    'params_file': ('', 'Params file for all nodes; empty = config/pipeline.yaml of isaac_perf.'),
    'backend': ('', 'Inference backend: auto, onnxruntime, torch or tensorrt; empty = from the params file.'),
    'model': ('', "Built-in model ('resnet50', 'detector') or an ONNX file path; empty = from the file."),
    'num_cameras': ('', 'Number of cameras (/camera_{i}/image_raw); empty = from the params file.'),
    'rate_hz': ('', 'Frames per second per camera; empty = from the params file.'),
    'width': ('', 'Camera image width; empty = from the params file.'),
    'height': ('', 'Camera image height; empty = from the params file.'),
    'use_monitor': ('true', 'Start perf_monitor (true/false).'),
    'log_level': ('info', 'Log level of every node.'),
}


def _nodes(context, *args, **kwargs):
    from isaac_perf.core.paths import config_file
    from isaac_perf.core.pipeline_graph import pipeline_nodes, pipeline_params

    def arg(name):
        return LaunchConfiguration(name).perform(context).strip()

    def number(name, kind):
        text = arg(name)
        if not text:
            return None
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f'launch argument {name}:={text!r} is not a valid {kind.__name__}') from None

    params = pipeline_params(
        arg('params_file') or config_file('pipeline.yaml'), backend=arg('backend') or None,
        model=arg('model') or None, cameras=number('num_cameras', int), rate=number('rate_hz', float),
        width=number('width', int), height=number('height', int))
    ros_args = ['--log-level', arg('log_level')]
    return [Node(package='isaac_perf', executable=n.executable, name=n.name, output='screen',
                 parameters=list(n.parameters), ros_arguments=ros_args)
            for n in pipeline_nodes(params, use_monitor=arg('use_monitor').lower() in ('true', '1', 'yes'))]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)])

"""The pipeline graphs: which nodes run, which parameters each gets, and the topics that wire them.

One module used by `isaac-perf run` (isaac_perf/app/run.py) and by every launch file, so both ways of
starting a pipeline run the same graph. No rclpy and no launch import here: launch files turn each
`LaunchedNode` into a launch_ros Node, `isaac-perf run` composes the nodes in one process.

Parameters come from ROS 2 params files (config/*.yaml); the rules that cannot drift apart are computed
here: the inference node reads every camera the source publishes, the monitor watches the cameras (at the
source's rate) and the result topics, the batcher subscribes exactly the cameras that are launched.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isaac_perf.core.paths import config_file
from isaac_perf.core.transport.negotiation import descriptor_topic

PIPELINE_NODES = ('image_source', 'inference_node', 'perf_monitor')
CAMERA_PATTERN = '/camera_{i}/image_raw'
BUILTIN_MODELS = ('resnet50', 'detector')

# A launch_ros `parameters` entry: a params-file path or a dict of values; later entries win.
ParamEntry = str | dict[str, Any]


@dataclass(frozen=True)
class LaunchedNode:
    """One node of a graph: its executable (console script) and node name, and its parameters in order."""
    executable: str
    name: str
    parameters: tuple[ParamEntry, ...]


# ------------------------------------------------------------------------------------- params files

def load_params_file(path: str | Path,
                     node_names: Sequence[str] = PIPELINE_NODES) -> dict[str, dict[str, Any]]:
    """node name -> parameters, from a ROS 2 params file ('/**' sections apply to every node).

    The file is checked as rcl checks it (read_params_file): a bad one raises ParamsFileError (a
    ValueError) naming the file, the line and the fix, instead of a YAML traceback.
    """
    from isaac_perf.core.params_yaml import read_params_file
    data = read_params_file(path)
    shared: dict[str, Any] = {}
    per_node: dict[str, dict[str, Any]] = {}
    for key, params in data.items():
        name = str(key).strip('/')
        if name in ('**', '*'):
            shared.update(params)
        else:
            per_node.setdefault(name.rsplit('/', 1)[-1], {}).update(params)
    return {name: {**shared, **per_node.get(name, {})} for name in set(per_node) | set(node_names)}


@functools.cache
def _package_defaults() -> dict[str, dict[str, Any]]:
    # config/pipeline.yaml lists every parameter of the three nodes at its declared default and type
    # (test_pipeline_run checks it against the nodes' tables), so it is the reference for types here.
    return load_params_file(config_file('pipeline.yaml'))


def package_defaults(node: str) -> dict[str, Any]:
    """The package's default parameters of a pipeline node (a copy)."""
    return dict(_package_defaults().get(node, {}))


def coerce(values: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    """Fit YAML/CLI values to the types of `reference` (name -> default): 30 -> 30.0 for a float
    parameter, since rclpy refuses an integer for a float parameter."""
    out = {}
    for name, value in values.items():
        default = reference.get(name)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(default, (list, tuple)) and default and isinstance(default[0], float) \
                and isinstance(value, list):
            value = [float(v) for v in value]
        out[name] = value
    return out


# -------------------------------------------------------------------------------------------- topics

def camera_topics(values: Mapping[str, Any]) -> list[str]:
    """image_source's topics: camera_topics when set, else topic_pattern with {i} = 0..camera_count-1."""
    topics = [t for t in values['camera_topics'] if t]
    if topics:
        return topics
    pattern = values['topic_pattern']
    return [pattern.replace('{i}', str(i)) for i in range(values['camera_count'])]


def watched_frame_topics(topics: list[str], source: Mapping[str, Any]) -> list[str]:
    """The camera topics a watcher (perf_monitor, qos_tuner) should read: with image_source's zero_copy on,
    the descriptor topics, whose stamps are the frames' and whose messages are tiny; a watcher on the plain
    topic would make the source fill a plain Image for it (core.transport.negotiation)."""
    zero_copy = bool(source.get('zero_copy', package_defaults('image_source')['zero_copy']))
    return [descriptor_topic(t) for t in topics] if zero_copy else list(topics)


def output_topics(values: Mapping[str, Any]) -> list[str]:
    """inference_node's result topic of each input: <input>/detections, or output_topic with {i}."""
    inputs = [t for t in values['input_topics'] if t]  # '' entries stand for an empty list
    pattern = values['output_topic']
    if not pattern:
        return [f'{t.rstrip("/")}/detections' for t in inputs]
    return [pattern.replace('{i}', str(i)) for i in range(len(inputs))]


def pattern_topics(count: int, pattern: str = CAMERA_PATTERN) -> list[str]:
    if count < 1:
        raise ValueError(f'{count} cameras: launch at least one camera')
    return [pattern.replace('{i}', str(i)) for i in range(count)]


# ------------------------------------------------------------------ image_source -> inference_node

def _apply_overrides(source: dict[str, Any], infer: dict[str, Any], backend: str | None, model: str | None,
                     cameras: int | None, rate: float | None, width: int | None, height: int | None) -> None:
    if cameras is not None:
        source['camera_count'] = cameras
        source['camera_topics'] = ['']
    for key, value in (('rate_hz', rate), ('width', width), ('height', height)):
        if value is not None:
            source[key] = value
    if backend is not None:
        infer['backend'] = backend
    if model is not None:
        if model in BUILTIN_MODELS:
            infer['model'] = model
        else:
            infer['model'] = ''
            infer['model_file_path'] = str(Path(model).expanduser())
        infer['task'] = 'auto'


def pipeline_params(config: str | Path, backend: str | None = None, model: str | None = None,
                    cameras: int | None = None, rate: float | None = None, width: int | None = None,
                    height: int | None = None, zero_copy: bool | None = None) -> dict[str, dict[str, Any]]:
    """Each node's parameters: the params file, the command-line overrides, and the wiring between them.

    The inference node always reads the image source's topics, and the monitor watches those cameras
    and the result topics, whatever the file says, so the three cannot drift apart.
    """
    params = load_params_file(config)
    source, infer, monitor = params['image_source'], params['inference_node'], params['perf_monitor']
    _apply_overrides(source, infer, backend, model, cameras, rate, width, height)
    if zero_copy is not None:  # the frame transport, on both ends
        source['zero_copy'] = infer['zero_copy'] = bool(zero_copy)
    topics = camera_topics({**package_defaults('image_source'), **source})
    infer['input_topics'] = topics
    results = output_topics({**package_defaults('inference_node'), **infer})
    frames = watched_frame_topics(topics, source)
    watched = frames + results
    watched += [t for t in monitor.get('watched_topics') or [] if t and t not in watched]  # the file's extras
    monitor['watched_topics'] = watched
    rate_hz = float(source.get('rate_hz', package_defaults('image_source')['rate_hz']))
    monitor['expected_rates_hz'] = [rate_hz if t in frames else 0.0 for t in watched]
    for name in PIPELINE_NODES:
        params[name] = coerce(params[name], package_defaults(name))
    return params


def pipeline_nodes(params: Mapping[str, Mapping[str, Any]], use_monitor: bool = True) -> list[LaunchedNode]:
    """The pipeline's nodes (pipeline.launch.py), from `pipeline_params`."""
    nodes = [LaunchedNode('inference_node', 'inference_node', (dict(params['inference_node']),)),
             LaunchedNode('image_source', 'image_source', (dict(params['image_source']),))]
    if use_monitor:
        nodes.append(LaunchedNode('perf_monitor', 'perf_monitor', (dict(params['perf_monitor']),)))
    return nodes


# ----------------------------------------------------------------- image_source -> stream_batcher

def _batcher_results(topics: list[str], batcher_file: str) -> list[str]:
    suffix = 'detections'
    if batcher_file and Path(batcher_file).is_file():
        suffix = load_params_file(batcher_file, ('stream_batcher',))['stream_batcher'].get('output_suffix',
                                                                                            suffix)
    return [f'{t.rstrip("/")}/{suffix}' for t in topics]


def batcher_nodes(cameras: int, rate_hz: float, width: int, height: int, batcher_file: str,
                  monitor_file: str, batcher: Mapping[str, Any], zero_copy: bool = True
                  ) -> list[LaunchedNode]:
    """N synchronised cameras -> stream_batcher (`batcher`: its overrides) -> results, monitored
    (batcher.launch.py). `zero_copy` is the frame transport of the source (the batcher's own comes
    from `batcher`, default on)."""
    topics = pattern_topics(cameras)
    source = {'camera_count': cameras, 'topic_pattern': CAMERA_PATTERN, 'rate_hz': float(rate_hz),
              'width': int(width), 'height': int(height), 'zero_copy': bool(zero_copy)}
    watched = watched_frame_topics(topics, source) + _batcher_results(topics, batcher_file)
    monitor = {'watched_topics': watched,
               'expected_rates_hz': [float(rate_hz)]}
    return [LaunchedNode('image_source', 'image_source', (source,)),
            LaunchedNode('stream_batcher', 'stream_batcher',
                         (batcher_file, {'camera_topics': topics, **batcher})),
            LaunchedNode('perf_monitor', 'perf_monitor', (monitor_file, monitor))]


# ----------------------------------------------------- the same, with qos_tuner closing the loop

# The monitor's window for what it shows; the tuner reads the batcher's own per-frame stage reports
# (window_source stage_times: windows that shorten as the frame rate rises, counting only frames captured
# after a change), as benchmarks/tuning_ros.py measured it on the H200.
TUNED_MONITOR = {'window_s': 2.0, 'publish_period_s': 0.5}
TUNED_TUNER = {'target_node': '/stream_batcher', 'window_source': 'stage_times', 'cooldown_s': 0.5,
               'confirm_windows': 2, 'num_streams_max': 2}
# Every batch size and stream count the tuner may set is warmed (CUDA graphs captured) at engine load, so a
# tuning step never reloads the engine: up to the tuner's default batch_size_max and TUNED_TUNER's streams.
TUNED_BATCHER = {'graph_max_batch_size': 64, 'graph_streams': 2}


def tuned_pipeline_nodes(cameras: int, rate_hz: float, pipeline_file: str, tuner_file: str,
                         tuned_file: str, tuner: Mapping[str, Any]) -> list[LaunchedNode]:
    """Cameras -> stream_batcher, watched by perf_monitor and tuned by qos_tuner (tuned_pipeline.launch.py).

    `tuned_file` (a params file an earlier tuner wrote) is applied last when it exists, so its values win;
    `tuner` holds the tuner's overrides (budget, advise_only, output_config_path...).
    """
    topics = pattern_topics(cameras)
    base: tuple[ParamEntry, ...] = (pipeline_file,) if pipeline_file and Path(pipeline_file).is_file() else ()
    tuned = (tuned_file,) if tuned_file and Path(tuned_file).is_file() else ()
    source = load_params_file(pipeline_file, ('image_source',))['image_source'] if base else {}
    return [
        LaunchedNode('image_source', 'image_source',
                     base + ({'camera_topics': topics, 'rate_hz': float(rate_hz)},)),
        LaunchedNode('stream_batcher', 'stream_batcher',
                     base + ({'camera_topics': topics, **TUNED_BATCHER},) + tuned),
        LaunchedNode('perf_monitor', 'perf_monitor',
                     (str(config_file('perf_monitor.yaml')), dict(TUNED_MONITOR))),
        LaunchedNode('qos_tuner', 'qos_tuner', (tuner_file, {
            **TUNED_TUNER, 'cameras': cameras, 'watch_topics': watched_frame_topics(topics, source),
            'expected_rate_hz': float(rate_hz),
            **tuner})),
    ]


# ------------------------------------------------------------------ a graph as separate processes

NODE_MODULES = {'image_source': 'isaac_perf.nodes.image_source',
                'inference_node': 'isaac_perf.nodes.inference',
                'stream_batcher': 'isaac_perf.nodes.stream_batcher',
                'perf_monitor': 'isaac_perf.nodes.perf_monitor',
                'qos_tuner': 'isaac_perf.nodes.qos_tuner'}


def process_command(node: LaunchedNode, folder: str | Path, python: str | None = None) -> list[str]:
    """The command that runs `node` as launch_ros does (its own process, `__node:=<name>`, its params files
    in order), as `python -m <module>` so it works from a checkout; dict entries are written as params
    files into `folder`."""
    import sys

    import yaml
    argv = [python or sys.executable, '-m', NODE_MODULES[node.executable], '--ros-args', '-r',
            f'__node:={node.name}']
    for i, entry in enumerate(node.parameters):
        if isinstance(entry, dict):
            path = Path(folder) / f'{node.name}_{i}.yaml'
            path.write_text(yaml.safe_dump({node.name: {'ros__parameters': entry}}))
            entry = str(path)
        argv += ['--params-file', str(entry)]
    return argv

"""What inference_node and stream_batcher share: their model parameters, the rules between them, the
model file they resolve to, and the check a frame passes before it may reach the model.

One table, so both nodes name, describe and validate `model`, `device`, `input_width`, ... the same way;
each node adds its own parameters (topics, batching) around these.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from isaac_perf.core.inference.engines.base import EngineError
from isaac_perf.core.inference.frames import ImageFormatError, check_layout
from isaac_perf.core.inference.preprocess import ENCODINGS as MODEL_ENCODINGS
from isaac_perf.core.params import ParamSpec

BACKENDS = ('auto', 'onnxruntime', 'torch', 'tensorrt')
MODELS = ('resnet50', 'detector', '')
TASKS = ('auto', 'classification', 'detection')


def names(values: Iterable[str]) -> list[str]:
    """The non-empty entries: list parameters default to [''] (rclpy cannot type an empty list)."""
    return [v for v in values if v]


def device_error(value: str) -> str:
    """'' when `value` names a device an engine can be asked for, else what to write instead."""
    if value in ('auto', 'cpu', 'cuda') or (value.startswith('cuda:') and value[5:].isdigit()):
        return ''
    return f"device={value!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'"


# The model, where it runs and how frames are fitted to it.
MODEL_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec('model', 'resnet50', "Built-in model to generate and run when model_file_path is ''.",
              choices=MODELS),
    ParamSpec('model_file_path', '', "ONNX model to run; when set it is used instead of the built-in model "
              "(Isaac ROS: model_file_path). '' = the built-in model."),
    ParamSpec('backend', 'auto', 'Inference backend; auto = tensorrt, then torch (with a GPU), else '
              'onnxruntime. A backend that cannot run here falls back with a warning.', choices=BACKENDS),
    ParamSpec('device', 'auto', "Where to run: 'auto', 'cpu', 'cuda' or 'cuda:N'.", check=device_error),
    ParamSpec('input_width', 0, "Model input width; 0 = the model's own (resnet50 224, detector 320).",
              min=0, max=4096),
    ParamSpec('input_height', 0, "Model input height; 0 = the model's own.", min=0, max=4096),
    ParamSpec('resize', 'letterbox', 'How frames are fitted to the model input.',
              choices=('letterbox', 'stretch')),
    ParamSpec('task', 'auto', 'Post-processing; auto = from the model (boxes+scores outputs = detection).',
              choices=TASKS),
)

# Post-processing: live, applied to the next batch without reloading the engine.
POSTPROCESS_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec('top_k', 5, 'Classes reported per frame (classification).', min=1, max=1000),
    ParamSpec('score_threshold', 0.25, 'Minimum detection score.', min=0.0, max=1.0),
    ParamSpec('nms_iou_threshold', 0.45, 'IoU above which NMS suppresses a lower-scoring box.',
              min=0.0, max=1.0),
    ParamSpec('max_detections', 100, 'Most detections reported per frame.', min=1, max=10000),
)

DIAGNOSTICS_SPEC = ParamSpec('diagnostics_period_s', 1.0, 'Period of the /diagnostics status of this node.',
                             min=0.05, max=60.0)

_FP16 = ParamSpec('enable_fp16', False, 'Run in FP16 where the backend can (torch, TensorRT).')

# Parameters whose change means a new engine.
MODEL_RELOAD_KEYS = frozenset(s.name for s in MODEL_SPECS) | {'enable_fp16', 'cuda_graphs'}


def fp16_spec(default: bool) -> ParamSpec:
    """`enable_fp16` with a node's own default (the batcher runs FP16 by default, inference_node FP32)."""
    return replace(_FP16, default=default)


def model_rule_errors(values: Mapping[str, Any]) -> list[str]:
    """Rules between model, input size and task (start-up and `ros2 param set` alike)."""
    errors = []
    model, task = values['model'], values['task']
    width, height = values['input_width'], values['input_height']
    if model == 'resnet50':
        if width and height and width != height:
            errors.append(f'resnet50 takes square inputs: input_width={width} and input_height={height} '
                          'differ')
        if 0 < max(width, height) < 32:
            errors.append('resnet50 needs an input of at least 32x32')
        if task == 'detection':
            errors.append('task=detection does not fit model=resnet50: use task auto or classification')
    if model == 'detector':
        for name in ('input_width', 'input_height'):
            if values[name] and (values[name] % 32 or values[name] < 64):
                errors.append(f'detector {name}={values[name]}: use a multiple of 32, at least 64')
        if task == 'classification':
            errors.append('task=classification does not fit model=detector: use task auto or detection')
    return errors


def model_file_errors(values: Mapping[str, Any]) -> list[str]:
    """A model_file_path that is set must name an existing file, whatever `model` says (it is the model
    that runs); with model '' it must be set. Refused before a load is tried."""
    path = values['model_file_path']
    if not path:
        return ["model is '' so model_file_path must name an ONNX file"] if values['model'] == '' else []
    if not Path(path).expanduser().is_file():
        return [f'model_file_path {path!r} does not exist: give the path of an ONNX file, or \'\' to run '
                f'the built-in model {values["model"]!r}' if values['model'] else
                f'model_file_path {path!r} does not exist: give the path of an ONNX file']
    return []


def model_path(values: Mapping[str, Any]) -> str:
    """The ONNX file to load (a built-in model is built and cached at the asked size); EngineError if none."""
    from isaac_perf.core.inference.models import model_file_for  # builds ONNX graphs: load onnx on demand
    try:
        # A model_file_path that is set wins over the built-in `model` (as docs/pipeline.md says:
        # `ros2 param set ... model_file_path X` loads X; it used to reload the built-in model).
        model = '' if values['model_file_path'] else values['model']
        return model_file_for(model, values['model_file_path'], values['input_width'], values['input_height'])
    except ValueError as exc:
        raise EngineError(str(exc)) from exc
    except OSError as exc:
        if not model:
            raise
        from isaac_perf.core.inference.models import default_cache_dir
        raise EngineError(f'cannot write the generated {model} model under {default_cache_dir()} '
                          f'({exc.strerror or exc}): set ISAAC_PERF_CACHE to a writable folder') from exc


def check_model_frame(encoding: str, width: int, height: int, step: int, data_bytes: int) -> None:
    """Raise ImageFormatError when a frame's layout is broken or its encoding cannot be fed to the model.

    Touches no pixel: the check a subscription callback can afford for every frame.
    """
    # The encoding first: the layout check's message lists every encoding it can read, some of which the
    # model's preprocessing then refuses; this one lists only what the node takes.
    if encoding not in MODEL_ENCODINGS:
        raise ImageFormatError(f'encoding {encoding!r} cannot be fed to the model: publish one of '
                               f'{", ".join(MODEL_ENCODINGS)} (convert packed YUV or Bayer upstream, e.g. '
                               'with image_proc)')
    check_layout(encoding, width, height, step, data_bytes)


def topic_list_errors(name: str, topics: Sequence[str]) -> list[str]:
    """An Image-topic list parameter must name at least one topic, each once."""
    if not topics:
        return [f'{name} is empty: list at least one sensor_msgs/Image topic']
    if len(set(topics)) != len(topics):
        return [f'{name} has duplicates: {list(topics)}']
    return []

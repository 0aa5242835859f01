"""Real ONNX models with deterministic weights, written in code (no downloads).

Two models cover what the pipeline needs:

* ``resnet50``: the ResNet-50 v1.5 classifier (torchvision layout, ~4.1 GMAC at 224x224), input
  ``images`` [N, 3, H, W] float32, output ``logits`` [N, num_classes]; the batch axis is dynamic.
* ``detector``: a small single-stage detector (two feature levels, stride 16 and 32, three anchors a cell),
  input ``images`` [N, 3, H, W], outputs ``boxes`` [N, A, 4] (x1, y1, x2, y2 in input pixels, decoded in
  the graph) and ``scores`` [N, A, num_classes] (sigmoid); post-processing needs a score threshold and NMS
  (see :mod:`isaac_perf.core.inference.postprocess`).

Weights come from a seeded numpy generator, so the same parameters always give the same file, and
BatchNormalization layers carry non-trivial statistics so that BN folding in a backend is really tested.
Files are cached by their parameters (``~/.cache/isaac_perf/models`` unless a directory is given), written
atomically with a checksum sidecar (the artefact cache's, :mod:`isaac_perf.core.inference.engines.cache`),
so a half-written, truncated or corrupt file is rebuilt (with a warning), never picked up.

:func:`model_flops` counts the multiply-accumulates of any ONNX file (Conv, Gemm, MatMul, ConvTranspose)
from shape inference; benchmarks quote FLOPs = 2 x MACs.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Bump when the graph or weight recipe changes so cached files from an older builder are not reused.
BUILDER_VERSION = 2
OPSET = 17
IR_VERSION = 8  # opset 17 needs IR >= 8; keeping it low lets older onnxruntime builds load the files

MODEL_NAMES = ('resnet50', 'detector')


def default_cache_dir() -> Path:
    """Where generated models are kept unless a directory is given."""
    root = os.environ.get('ISAAC_PERF_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'isaac_perf')
    return Path(root) / 'models'


class _GraphBuilder:
    """Collects nodes and initializers; names are generated so every layer is unique and readable."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self._count: dict[str, int] = {}

    def name(self, prefix: str) -> str:
        n = self._count.get(prefix, 0)
        self._count[prefix] = n + 1
        return f'{prefix}_{n}'

    def const(self, prefix: str, array: np.ndarray) -> str:
        from onnx import numpy_helper
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], prefix: str | None = None, n_out: int = 1, **attrs) -> str:
        from onnx import helper
        base = self.name(prefix or op.lower())
        outs = [base] if n_out == 1 else [f'{base}_{i}' for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=base, **attrs))
        return outs[0]

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, bias: bool = False,
             w_scale: float = 1.0, b_init: float = 0.0) -> str:
        # He-normal weights keep activations near unit variance through ReLU stacks.
        std = np.sqrt(2.0 / (cin * k * k)) * w_scale
        w = (self.rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32)
        inputs = [x, self.const('w', w)]
        if bias:
            b = (b_init + 0.1 * self.rng.standard_normal(cout)).astype(np.float32)
            inputs.append(self.const('b', b))
        pad = k // 2
        return self.node('Conv', inputs, 'conv', kernel_shape=[k, k], strides=[stride, stride],
                         pads=[pad, pad, pad, pad])

    def bn(self, x: str, c: int, gamma_scale: float = 1.0) -> str:
        # Non-trivial running statistics: folding them into the conv must actually change the weights.
        gamma = (self.rng.uniform(0.8, 1.2, c) * gamma_scale).astype(np.float32)
        beta = (0.1 * self.rng.standard_normal(c)).astype(np.float32)
        mean = (0.1 * self.rng.standard_normal(c)).astype(np.float32)
        var = self.rng.uniform(0.5, 1.5, c).astype(np.float32)
        return self.node('BatchNormalization', [x, self.const('gamma', gamma), self.const('beta', beta),
                                                self.const('mean', mean), self.const('var', var)],
                         'bn', epsilon=1e-5)

    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True,
                gamma_scale: float = 1.0) -> str:
        y = self.bn(self.conv(x, cin, cout, k, stride), cout, gamma_scale)
        return self.node('Relu', [y], 'relu') if relu else y

    def model(self, inputs: list, outputs: list, graph_name: str, doc: str):
        from onnx import checker, helper
        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', OPSET)],
                                  producer_name='isaac_perf.models', producer_version=str(BUILDER_VERSION),
                                  doc_string=doc)
        model.ir_version = IR_VERSION
        checker.check_model(model)
        return model


def _image_input(height: int, width: int):
    from onnx import TensorProto, helper
    return helper.make_tensor_value_info('images', TensorProto.FLOAT, ['batch', 3, height, width])


def make_resnet50(image_size: int = 224, num_classes: int = 1000, seed: int = 0):
    """The ResNet-50 v1.5 graph (stride on the 3x3 conv of each bottleneck, like torchvision)."""
    from onnx import TensorProto, helper
    if image_size < 32:
        raise ValueError(f'image_size={image_size} is too small for ResNet-50: use 32 or more')
    g = _GraphBuilder(seed)
    x = g.conv_bn('images', 3, 64, 7, stride=2)
    x = g.node('MaxPool', [x], 'maxpool', kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            s = stride if i == 0 else 1
            out = width * 4
            y = g.conv_bn(x, cin, width, 1)
            y = g.conv_bn(y, width, width, 3, stride=s)
            # A small last-BN gain keeps the residual sum's variance from growing through 16 blocks.
            y = g.conv_bn(y, width, out, 1, relu=False, gamma_scale=0.3)
            shortcut = g.conv_bn(x, cin, out, 1, stride=s, relu=False) if (s != 1 or cin != out) else x
            x = g.node('Relu', [g.node('Add', [y, shortcut], 'add')], 'relu')
            cin = out
    x = g.node('GlobalAveragePool', [x], 'gap')
    x = g.node('Flatten', [x], 'flatten', axis=1)
    fc_w = (g.rng.standard_normal((num_classes, cin)) * np.sqrt(1.0 / cin)).astype(np.float32)
    fc_b = (0.01 * g.rng.standard_normal(num_classes)).astype(np.float32)
    g.nodes.append(helper.make_node('Gemm', [x, g.const('fc_w', fc_w), g.const('fc_b', fc_b)], ['logits'],
                                    name='fc', transB=1))
    out = helper.make_tensor_value_info('logits', TensorProto.FLOAT, ['batch', num_classes])
    return g.model([_image_input(image_size, image_size)], [out], 'resnet50',
                   f'ResNet-50 v1.5, {image_size}x{image_size}, {num_classes} classes, seed {seed}')


@dataclass(frozen=True)
class DetectorLayout:
    """Where the detector's anchors are, so tests and docs can reason about its outputs."""
    height: int
    width: int
    strides: tuple[int, ...] = (16, 32)
    anchors_per_cell: int = 3
    anchor_scales: tuple[float, ...] = (2.0, 4.0, 8.0)  # anchor side = scale x stride

    @property
    def num_anchors(self) -> int:
        return sum((self.height // s) * (self.width // s) * self.anchors_per_cell for s in self.strides)

    def anchors(self) -> np.ndarray:
        """[A, 4] anchors as (cx, cy, w, h) in input pixels, in the order the graph emits them."""
        out = []
        for s in self.strides:
            h, w = self.height // s, self.width // s
            ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
            cx = (xs.reshape(-1, 1) + 0.5) * s
            cy = (ys.reshape(-1, 1) + 0.5) * s
            side = np.asarray(self.anchor_scales, dtype=np.float64).reshape(1, -1) * s
            a = np.stack(np.broadcast_arrays(cx, cy, side, side), axis=-1)  # [h*w, A, 4]
            out.append(a.reshape(-1, 4))
        return np.concatenate(out).astype(np.float32)


def make_detector(height: int = 320, width: int = 320, num_classes: int = 80, seed: int = 0):
    """A small single-stage detector; boxes are decoded in the graph, NMS is left to post-processing."""
    from onnx import TensorProto, helper
    if height % 32 or width % 32 or height < 64 or width < 64:
        raise ValueError(f'detector input {height}x{width}: both sides must be multiples of 32 and >= 64')
    layout = DetectorLayout(height, width)
    A = layout.anchors_per_cell
    g = _GraphBuilder(seed + 1000)
    x = g.conv_bn('images', 3, 16, 3, stride=2)      # /2
    x = g.conv_bn(x, 16, 32, 3, stride=2)            # /4
    x = g.conv_bn(x, 32, 64, 3, stride=2)            # /8
    y = g.conv_bn(x, 64, 64, 3)
    y = g.conv_bn(y, 64, 64, 3, relu=False, gamma_scale=0.3)
    x = g.node('Relu', [g.node('Add', [x, y], 'add')], 'relu')
    p4 = g.conv_bn(x, 64, 128, 3, stride=2)          # /16
    p5 = g.conv_bn(p4, 128, 256, 3, stride=2)        # /32
    boxes_lv, scores_lv = [], []
    for feat, c, s in ((p4, 128, 16), (p5, 256, 32)):
        hw = (height // s) * (width // s)
        head = g.conv_bn(feat, c, 128, 3)
        for kind, ch, dst in (('box', 4, boxes_lv), ('cls', num_classes, scores_lv)):
            # bias -2 on the class logits: sigmoid ~0.12, so a threshold keeps a realistic few per image
            raw = g.conv(head, 128, A * ch, 1, bias=True, w_scale=0.5, b_init=-2.0 if kind == 'cls' else 0.0)
            r = g.node('Reshape', [raw, g.const('shape', np.array([0, A, ch, hw], np.int64))], 'reshape')
            t = g.node('Transpose', [r], 'transpose', perm=[0, 3, 1, 2])  # [N, hw, A, ch]: cell-major order
            flat = g.const('shape', np.array([0, hw * A, ch], np.int64))
            dst.append(g.node('Reshape', [t, flat], 'reshape'))
    box_raw = g.node('Concat', boxes_lv, 'concat', axis=1)
    cls_raw = g.node('Concat', scores_lv, 'concat', axis=1)
    # decode: cx = acx + (2 sig - 1) * stride, w = aw * 2 sig; then (cx, cy, w, h) @ M -> (x1, y1, x2, y2)
    anchors = layout.anchors()
    stride_per_anchor = np.concatenate([np.full((height // s) * (width // s) * A, s, np.float32)
                                        for s in layout.strides])
    scale = np.stack([2 * stride_per_anchor, 2 * stride_per_anchor, 2 * anchors[:, 2], 2 * anchors[:, 3]], 1)
    offset = np.stack([anchors[:, 0] - stride_per_anchor, anchors[:, 1] - stride_per_anchor,
                       np.zeros_like(stride_per_anchor), np.zeros_like(stride_per_anchor)], 1)
    cxcywh = g.node('Add', [g.node('Mul', [g.node('Sigmoid', [box_raw], 'sigmoid'),
                                           g.const('anchor_scale', scale.astype(np.float32))], 'mul'),
                            g.const('anchor_offset', offset.astype(np.float32))], 'add')
    to_xyxy = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]], np.float32)
    g.nodes.append(helper.make_node('MatMul', [cxcywh, g.const('to_xyxy', to_xyxy)], ['boxes'],
                                    name='decode'))
    g.nodes.append(helper.make_node('Sigmoid', [cls_raw], ['scores'], name='scores'))
    n_anchors = layout.num_anchors
    outs = [helper.make_tensor_value_info('boxes', TensorProto.FLOAT, ['batch', n_anchors, 4]),
            helper.make_tensor_value_info('scores', TensorProto.FLOAT, ['batch', n_anchors, num_classes])]
    return g.model([_image_input(height, width)], outs, 'detector',
                   f'single-stage detector {height}x{width}, {num_classes} classes, '
                   f'{layout.num_anchors} anchors, seed {seed}')


def _atomic_save(model, path: Path, key: dict) -> None:
    """Write `model` to `path` with the artefact cache's checksum sidecar (engines/cache.py).

    The file is moved into place whole (readers see the old file or the new one, never half of it) and
    the sidecar is written last, so a crash or a truncation later is caught by validate_artifact().
    """
    import onnx

    from isaac_perf.core.inference.engines.cache import write_artifact
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        write_artifact(tmp, str(path), key)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cached(path: Path, key: dict, make, force: bool) -> Path:
    """`path` when its sidecar vouches for it (same builder key, size and SHA-256); else build it again.

    A cached file that is truncated, corrupt, replaced or has no sidecar is rebuilt, with one warning
    saying why: it is never trusted on its name alone.
    """
    from isaac_perf.core.inference.engines.cache import validate_artifact
    if not force:
        why = validate_artifact(str(path), key)
        if why is None:
            return path
        if path.exists():
            logging.getLogger('isaac_perf.models').warning(
                'cached model %s is not trusted, rebuilding it: %s', path, why)
    _atomic_save(make(), path, key)
    return path


def build_resnet50(image_size: int = 224, num_classes: int = 1000, seed: int = 0,
                   cache_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Write (or reuse) the ResNet-50 ONNX file for these parameters; returns its path."""
    d = Path(cache_dir) if cache_dir else default_cache_dir()
    path = d / f'resnet50_{image_size}px_{num_classes}c_seed{seed}_v{BUILDER_VERSION}.onnx'
    key = {'model': 'resnet50', 'builder_version': BUILDER_VERSION, 'image_size': image_size,
           'num_classes': num_classes, 'seed': seed}
    return _cached(path, key, lambda: make_resnet50(image_size, num_classes, seed), force)


def build_detector(height: int = 320, width: int = 320, num_classes: int = 80, seed: int = 0,
                   cache_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Write (or reuse) the detector ONNX file for these parameters; returns its path."""
    d = Path(cache_dir) if cache_dir else default_cache_dir()
    path = d / f'detector_{height}x{width}_{num_classes}c_seed{seed}_v{BUILDER_VERSION}.onnx'
    key = {'model': 'detector', 'builder_version': BUILDER_VERSION, 'height': height, 'width': width,
           'num_classes': num_classes, 'seed': seed}
    return _cached(path, key, lambda: make_detector(height, width, num_classes, seed), force)


def resolve_model(model: str, cache_dir: str | os.PathLike | None = None, **params) -> Path:
    """A built-in model name ('resnet50', 'detector', optionally with params) or a path to an ONNX file.

    This is what a node's ``model_file_path`` parameter goes through: a built-in name is generated on
    first use, anything else must be an existing file.
    """
    if model == 'resnet50':
        return build_resnet50(cache_dir=cache_dir, **params)
    if model == 'detector':
        return build_detector(cache_dir=cache_dir, **params)
    path = Path(os.path.expanduser(model))
    if not path.is_file():
        raise FileNotFoundError(f"model '{model}' is neither a built-in model {MODEL_NAMES} nor an existing "
                                'ONNX file: give a built-in name or the path of a .onnx file')
    return path


def _static_dims(model, batch: int):
    """A copy of `model` with every symbolic input dim set to `batch`, then shape-inferred."""
    import onnx
    from onnx import shape_inference
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in m.graph.input:
        for d in inp.type.tensor_type.shape.dim:
            if not d.HasField('dim_value'):
                d.dim_value = batch
    return shape_inference.infer_shapes(m)


def model_macs(model_or_path, batch: int = 1) -> int:
    """Multiply-accumulates of one forward pass (Conv, ConvTranspose, Gemm, MatMul) at `batch`.

    Element-wise ops are left out: they are bandwidth, not arithmetic, and under 1% of a CNN's MACs.
    """
    import onnx
    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path
    m = _static_dims(model, batch)
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField('dim_value') for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)
    for init in m.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    macs = 0
    for node in m.graph.node:
        out = shapes.get(node.output[0])
        if out is None:
            continue
        if node.op_type in ('Conv', 'ConvTranspose'):
            w = shapes[node.input[1]]
            group = next((a.i for a in node.attribute if a.name == 'group'), 1)
            if node.op_type == 'Conv':
                macs += int(np.prod(out)) * int(np.prod(w[1:]))
            else:  # ConvTranspose weight is [Cin, Cout/group, k...]: each input pixel feeds Cout/group x k
                inp = shapes[node.input[0]]
                macs += int(np.prod(inp)) * int(np.prod(w[1:])) // max(group, 1) * group
        elif node.op_type == 'Gemm':
            a = shapes[node.input[0]]
            trans_a = next((x.i for x in node.attribute if x.name == 'transA'), 0)
            k = a[0] if trans_a else a[1]
            macs += int(np.prod(out)) * k
        elif node.op_type == 'MatMul':
            a = shapes.get(node.input[0])
            if a:
                macs += int(np.prod(out)) * a[-1]
    return macs


def model_flops(model_or_path, batch: int = 1) -> int:
    """FLOPs of one forward pass (2 x MACs): what benchmarks divide by the matrix rate."""
    return 2 * model_macs(model_or_path, batch)


DEFAULT_INPUT_SIZES = {'resnet50': (224, 224), 'detector': (320, 320)}  # (width, height)


def model_file_for(model: str, model_file_path: str = '', input_width: int = 0, input_height: int = 0) -> str:
    """The ONNX file a node should load: a built-in model built (cached) at the asked input size, or the
    user's own file. `model` '' means `model_file_path`; a size of 0 means the model's default."""
    if not model:
        if not model_file_path:
            raise ValueError("no model: set model to 'resnet50' or 'detector', or model_file_path to an "
                             'ONNX file')
        return str(Path(model_file_path).expanduser())
    if model not in DEFAULT_INPUT_SIZES:
        raise ValueError(f"unknown model '{model}': use one of {', '.join(DEFAULT_INPUT_SIZES)}")
    default_w, default_h = DEFAULT_INPUT_SIZES[model]
    width, height = input_width or default_w, input_height or default_h
    if model == 'resnet50':
        return str(build_resnet50(image_size=width))
    return str(build_detector(height=height, width=width))

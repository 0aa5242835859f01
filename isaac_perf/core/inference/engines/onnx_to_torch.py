"""A small ONNX -> torch.fx converter for the ops CNN classifiers and detectors use.

Why our own: onnx2torch needs torchvision, which does not import beside every torch build, and the torch
backend only needs the ops of convolutional vision models. The result is a ``torch.fx.GraphModule``: plain
torch calls with no Python interpreter loop over ONNX nodes, so eager mode is as fast as hand-written
torch, and torch.export / AOTInductor / CUDA-graph capture all work on it.

At conversion, BatchNormalization that follows a Conv (and is its only consumer) is folded into the
conv's weights and bias, in float64 to keep FP32 agreement tight. Shapes given to Reshape, Slice, Squeeze
and friends must be constants (initializers or Constant nodes), as they are in exported CNNs after
constant folding; a graph computing shapes at run time, or an op not listed in ``SUPPORTED_OPS``, raises
ConversionError naming the op and suggesting the onnxruntime backend.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from isaac_perf.core.inference.engines.base import EngineError


class ConversionError(EngineError):
    """The ONNX graph uses something this converter does not support; the message names it."""


def _attrs(node) -> dict[str, Any]:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _onnx_reshape(x, shape: tuple[int, ...]):
    # ONNX Reshape: 0 copies the input's dimension (allowzero=0), -1 is inferred.
    return x.reshape([x.shape[i] if s == 0 else s for i, s in enumerate(shape)])


def _flatten(x, axis: int):
    axis = axis if axis >= 0 else x.dim() + axis
    lead = 1
    for d in x.shape[:axis]:
        lead = lead * d
    return x.reshape(lead, -1) if axis > 0 else x.reshape(1, -1)


def _slice(x, starts, ends, axes, steps):
    idx = [slice(None)] * x.dim()
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        idx[a] = slice(s, None if e >= 2**62 else e, st)
    return x[tuple(idx)]


class _Converter:
    def __init__(self, model, fold_bn: bool = True, fuse: bool = True) -> None:
        import torch
        from onnx import numpy_helper
        self.torch = torch
        self.model = model
        self.graph = torch.fx.Graph()
        self.root = torch.nn.Module()
        self.env: dict[str, Any] = {}
        self.consts: dict[str, np.ndarray] = {n.name: numpy_helper.to_array(n)
                                              for n in model.graph.initializer}
        self._names: set[str] = set()
        self.fold_bn = fold_bn
        self.fuse = fuse and fold_bn
        self.folded = 0
        self.fused = 0

    # -- helpers ---------------------------------------------------------------------------------------------
    def attr_name(self, base: str) -> str:
        name = re.sub(r'\W', '_', base) or 'c'
        if name[0].isdigit():
            name = 'n_' + name
        cand, i = name, 1
        while cand in self._names or hasattr(self.root, cand):
            cand = f'{name}_{i}'
            i += 1
        self._names.add(cand)
        return cand

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)

    def need_const(self, node, idx: int, what: str) -> np.ndarray:
        if idx >= len(node.input) or not node.input[idx]:
            return None
        v = self.const(node.input[idx])
        if v is None:
            raise ConversionError(f"{node.op_type} node '{node.name}': {what} (input {idx}) is computed "
                                  'at run time; only constant shapes are supported here. Constant-fold '
                                  'the model (e.g. onnxsim) or use the onnxruntime backend')
        return v

    def value(self, name: str):
        """An fx node for an ONNX value; constants become buffers (so .half()/.to() move them)."""
        if name in self.env:
            return self.env[name]
        if name in self.consts:
            arr = self.consts[name]
            t = self.torch.from_numpy(np.array(arr, copy=True))
            attr = self.attr_name('const_' + name)
            self.root.register_buffer(attr, t)
            self.env[name] = self.graph.get_attr(attr)
            return self.env[name]
        raise ConversionError(f"value '{name}' is used before it is produced: the ONNX graph is not "
                              'topologically sorted or is missing an input')

    def call(self, fn: Callable, *args, **kwargs):
        return self.graph.call_function(fn, args, kwargs)

    # -- conversion ------------------------------------------------------------------------------------------
    def run(self):
        torch = self.torch
        g = self.model.graph
        # The plans below key nodes by id(); protobuf hands out one wrapper per node only while some
        # reference keeps it alive, so hold them all for the whole conversion.
        self._alive = list(g.node)
        self._collect_constants(g)
        graph_outputs = {o.name for o in g.output}
        bn_of = self._plan_bn_folds(g, graph_outputs) if self.fold_bn else {}
        skip = {id(n) for n in bn_of.values()}
        fused = self._plan_fusion(g, bn_of, graph_outputs) if self.fuse else {}
        deferred = {id(conv): (conv, add) for conv, add, _ in fused.values() if add is not None}
        at_add = {id(add): (conv, relu) for conv, add, relu in fused.values() if add is not None}
        # A plain conv feeding only the residual side of a fused conv+add+relu (ResNet's downsample
        # shortcut) gives its bias to the fused conv: relu(a + b1 + (c + b2)) = relu(a + (b1 + b2) + c),
        # which saves a broadcast bias-add pass over the activation (1.1 ms of 8.6 at batch 256).
        self._bias_donors = self._plan_bias_moves(g, bn_of, fused) if fused else {}
        self._moved_bias: dict[str, np.ndarray] = {}
        skip.update(id(relu) for _, _, relu in fused.values())
        for inp in g.input:
            if inp.name not in self.consts:
                self.env[inp.name] = self.graph.placeholder(self.attr_name(inp.name))
        for node in g.node:
            if node.op_type == 'Constant' or id(node) in skip or id(node) in deferred:
                continue
            handler = getattr(self, 'op_' + node.op_type, None)
            if handler is None:
                raise ConversionError(
                    f"ONNX op '{node.op_type}' (node '{node.name}') is not supported by the torch backend's "
                    f'converter (supported: {", ".join(sorted(SUPPORTED_OPS))}); use backend onnxruntime or '
                    'tensorrt for this model')
            if id(node) in at_add:
                self._emit_conv_add_relu(node, *at_add[id(node)], bn_of)
            elif node.op_type == 'Conv':
                self._emit_conv(node, bn_of, fused.get(id(node)))
            else:
                handler(node)
        outs = [self.env[o.name] if o.name in self.env else self.value(o.name) for o in g.output]
        self.graph.output(tuple(outs))
        gm = torch.fx.GraphModule(self.root, self.graph)
        gm.onnx_output_names = [o.name for o in g.output]
        return gm

    def _collect_constants(self, g) -> None:
        for node in g.node:
            if node.op_type == 'Constant':
                a = _attrs(node)
                if 'value' not in a:
                    raise ConversionError(f"Constant node '{node.name}' uses {sorted(a)}; only 'value' is "
                                          'supported')
                from onnx import numpy_helper
                self.consts[node.output[0]] = numpy_helper.to_array(a['value'])

    def _plan_bn_folds(self, g, graph_outputs) -> dict[str, Any]:
        """Conv output name -> the BatchNormalization that only it feeds, with constant parameters."""
        consumers: dict[str, int] = {}
        for node in g.node:
            for i in node.input:
                consumers[i] = consumers.get(i, 0) + 1
        producers = {o: n for n in g.node for o in n.output}
        bn_of: dict[str, Any] = {}
        for node in g.node:
            if node.op_type == 'BatchNormalization':
                src = producers.get(node.input[0])
                if (src is not None and src.op_type == 'Conv' and consumers.get(node.input[0]) == 1
                        and node.input[0] not in graph_outputs
                        and all(self.const(n) is not None for n in node.input[1:5])):
                    bn_of[src.output[0]] = node
        return bn_of

    def _emit_conv_add_relu(self, add, conv, relu, bn_of) -> None:
        """conv + add + relu, emitted at the add (where the residual input `z` exists), not at the conv."""
        eff = self._conv_out(conv, bn_of)
        z = add.input[1] if add.input[0] == eff else add.input[0]
        bn = bn_of.get(conv.output[0])
        extra = self._moved_bias.pop(z, None)
        self.op_Conv(conv, bn=bn, fuse='add_relu', z=self.value(z), extra_bias=extra)
        self.env[relu.output[0]] = self.env[conv.output[0]]
        self.fused += 1
        self.folded += bn is not None

    def _emit_conv(self, node, bn_of, plan) -> None:
        bn = bn_of.get(node.output[0])
        donate = self._bias_donors.get(id(node))
        self.op_Conv(node, bn=bn, fuse='relu' if plan else None, donate_bias_as=donate)
        if bn is not None:
            self.env[bn.output[0]] = self.env[node.output[0]]
            self.folded += 1
        if plan:
            self.env[plan[2].output[0]] = self.env[node.output[0]]
            self.fused += 1

    @staticmethod
    def _conv_out(conv, bn_of) -> str:
        bn = bn_of.get(conv.output[0])
        return bn.output[0] if bn is not None else conv.output[0]

    def _plan_fusion(self, g, bn_of, graph_outputs) -> dict[int, tuple]:
        """Conv(+folded BN) -> Relu and Conv -> Add -> Relu chains that cuDNN can run as one kernel.

        Returns {id(conv): (conv, add or None, relu)}. Only 2-D convs with symmetric explicit pads whose
        intermediate results feed nothing else qualify, so fusing never changes what the graph computes.
        """
        consumers: dict[str, list] = {}
        for node in g.node:
            for i in node.input:
                consumers.setdefault(i, []).append(node)
        producers = {o: n for n in g.node for o in n.output}

        def only(name):
            users = consumers.get(name, [])
            return users[0] if len(users) == 1 and name not in graph_outputs else None

        plan = {}
        claimed: set[int] = set()  # each Add fuses into one of its (possibly two) producing convs
        for node in g.node:
            w = self.const(node.input[1]) if node.op_type == 'Conv' else None
            if w is None or w.ndim != 4:
                continue
            a = _attrs(node)
            pads = list(a.get('pads', [0, 0, 0, 0]))
            if pads[:2] != pads[2:] or a.get('auto_pad', b'NOTSET') not in (b'NOTSET', 'NOTSET'):
                continue
            user = only(self._conv_out(node, bn_of))
            if user is None:
                continue
            if user.op_type == 'Relu':
                plan[id(node)] = (node, None, user)
            elif user.op_type == 'Add' and len(user.input) == 2:
                relu = only(user.output[0])
                other = user.input[1] if user.input[0] == self._conv_out(node, bn_of) else user.input[0]
                if (relu is not None and relu.op_type == 'Relu' and other not in self.consts
                        and other != self._conv_out(node, bn_of)):
                    # the residual must come from before the Add in graph order (it always does in a DAG),
                    # and not from this conv's own chain
                    if producers.get(other) is not node and id(user) not in claimed:
                        claimed.add(id(user))
                        plan[id(node)] = (node, user, relu)
        return plan

    def _plan_bias_moves(self, g, bn_of, fused) -> dict[int, str]:
        """{id(conv): its output name} for unfused convs whose only consumer is a fused Add's residual."""
        producers = {}
        for node in g.node:
            if node.op_type == 'Conv':
                producers[self._conv_out(node, bn_of)] = node
        uses: dict[str, int] = {}
        for node in g.node:
            for i in node.input:
                uses[i] = uses.get(i, 0) + 1
        fused_ids = set(fused)
        donors = {}
        for conv, add, _ in fused.values():
            if add is None:
                continue
            eff = self._conv_out(conv, bn_of)
            z = add.input[1] if add.input[0] == eff else add.input[0]
            src = producers.get(z)
            if src is not None and id(src) not in fused_ids and uses.get(z) == 1:
                donors[id(src)] = z
        return donors

    # -- ops -------------------------------------------------------------------------------------------------
    def op_Conv(self, node, bn=None, fuse: str | None = None, z=None, extra_bias=None,
                donate_bias_as: str | None = None):
        torch = self.torch
        a = _attrs(node)
        w = self.need_const(node, 1, 'the weight').astype(np.float64)
        b = self.const(node.input[2]).astype(np.float64) if len(node.input) > 2 and node.input[2] else None
        nd = w.ndim - 2
        if nd not in (1, 2):
            raise ConversionError(f"Conv node '{node.name}' is {nd}-D; only 1-D and 2-D convs are supported")
        if bn is not None:
            gamma, beta, mean, var = (self.const(n).astype(np.float64) for n in bn.input[1:5])
            eps = _attrs(bn).get('epsilon', 1e-5)
            k = gamma / np.sqrt(var + eps)
            w = w * k.reshape(-1, *([1] * (w.ndim - 1)))
            b = (b if b is not None else 0.0) - mean
            b = b * k + beta
        if donate_bias_as is not None and b is not None:
            self._moved_bias[donate_bias_as] = np.asarray(b, dtype=np.float64)
            b = None
        if extra_bias is not None:
            b = extra_bias if b is None else b + extra_bias
        group = a.get('group', 1)
        strides = tuple(a.get('strides', [1] * nd))
        dil = tuple(a.get('dilations', [1] * nd))
        kshape = w.shape[2:]
        pads = list(a.get('pads', [0] * (2 * nd)))
        auto_pad = a.get('auto_pad', b'NOTSET')
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        x = self.value(node.input[0])
        if auto_pad in ('SAME_UPPER', 'SAME_LOWER'):
            pads = self._same_pads(node, kshape, strides, dil, auto_pad)
        elif auto_pad not in ('NOTSET', 'VALID'):
            raise ConversionError(f"Conv node '{node.name}': auto_pad={auto_pad} is not supported")
        begin, end = pads[:nd], pads[nd:]
        if begin != end:
            # F.pad takes pads last-dim first: (left, right, top, bottom)
            fp = []
            for i in reversed(range(nd)):
                fp += [begin[i], end[i]]
            x = self.call(torch.nn.functional.pad, x, tuple(fp))
            padding = 0
        else:
            padding = tuple(begin)
        if fuse:
            cls = fused_conv2d_class()
        else:
            cls = torch.nn.Conv2d if nd == 2 else torch.nn.Conv1d
        conv = cls(w.shape[1] * group, w.shape[0], kshape, stride=strides, padding=padding, dilation=dil,
                   groups=group, bias=b is not None)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(w.astype(np.float32)))
            if b is not None:
                conv.bias.copy_(torch.from_numpy(np.asarray(b, dtype=np.float32)))
        name = self.attr_name(node.name or 'conv')
        self.root.add_module(name, conv)
        args = (x,) if z is None else (x, z)
        self.env[node.output[0]] = self.graph.call_module(name, args)

    def _same_pads(self, node, kshape, strides, dil, mode):
        shape = self._static_input_shape(node.input[0])
        pads_b, pads_e = [], []
        for i, (k, s, d) in enumerate(zip(kshape, strides, dil, strict=True)):
            n = shape[2 + i]
            out = -(-n // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
            small, big = total // 2, total - total // 2
            pads_b.append(small if mode == 'SAME_UPPER' else big)
            pads_e.append(big if mode == 'SAME_UPPER' else small)
        return pads_b + pads_e

    def _static_input_shape(self, name):
        from onnx import shape_inference
        if not hasattr(self, '_shapes'):
            m = shape_inference.infer_shapes(self.model)
            self._shapes = {}
            for vi in list(m.graph.input) + list(m.graph.value_info):
                self._shapes[vi.name] = [d.dim_value if d.HasField('dim_value') else -1
                                         for d in vi.type.tensor_type.shape.dim]
        shape = self._shapes.get(name)
        if not shape or any(d <= 0 for d in shape[2:]):
            raise ConversionError(f"auto_pad SAME needs the spatial shape of '{name}', which is not static; "
                                  'export the model with explicit pads or use the onnxruntime backend')
        return shape

    def op_BatchNormalization(self, node):
        torch = self.torch
        gamma, beta, mean, var = (self.need_const(node, i, 'BN parameters') for i in range(1, 5))
        eps = _attrs(node).get('epsilon', 1e-5)
        k = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        shift = beta - mean * k
        # y = x * k + shift, broadcast over the channel axis (1); kept as buffers so .half() moves them
        shape = (1, -1, 1, 1)
        scale_name = self.attr_name((node.name or 'bn') + '_scale')
        shift_name = self.attr_name((node.name or 'bn') + '_shift')
        self.root.register_buffer(scale_name, torch.from_numpy(k.astype(np.float32)).reshape(shape))
        self.root.register_buffer(shift_name, torch.from_numpy(shift.astype(np.float32)).reshape(shape))
        x = self.value(node.input[0])
        y = self.call(torch.mul, x, self.graph.get_attr(scale_name))
        self.env[node.output[0]] = self.call(torch.add, y, self.graph.get_attr(shift_name))

    def _unary(self, node, fn, **kw):
        self.env[node.output[0]] = self.call(fn, self.value(node.input[0]), **kw)

    def op_Relu(self, node):
        self._unary(node, self.torch.relu)

    def op_Sigmoid(self, node):
        self._unary(node, self.torch.sigmoid)

    def op_Tanh(self, node):
        self._unary(node, self.torch.tanh)

    def op_Exp(self, node):
        self._unary(node, self.torch.exp)

    def op_Sqrt(self, node):
        self._unary(node, self.torch.sqrt)

    def op_Identity(self, node):
        self.env[node.output[0]] = self.value(node.input[0])

    def op_Dropout(self, node):
        self.env[node.output[0]] = self.value(node.input[0])

    def op_LeakyRelu(self, node):
        self._unary(node, self.torch.nn.functional.leaky_relu, negative_slope=_attrs(node).get('alpha', 0.01))

    def op_HardSigmoid(self, node):
        a = _attrs(node)
        alpha, beta = a.get('alpha', 0.2), a.get('beta', 0.5)
        x = self.call(self.torch.mul, self.value(node.input[0]), alpha)
        self.env[node.output[0]] = self.call(self.torch.clamp, self.call(self.torch.add, x, beta), 0.0, 1.0)

    def op_HardSwish(self, node):
        self._unary(node, self.torch.nn.functional.hardswish)

    def op_Clip(self, node):
        a = _attrs(node)
        lo = self.const(node.input[1]) if len(node.input) > 1 and node.input[1] else a.get('min')
        hi = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else a.get('max')
        lo = None if lo is None else float(np.asarray(lo))
        hi = None if hi is None else float(np.asarray(hi))
        self.env[node.output[0]] = self.call(self.torch.clamp, self.value(node.input[0]), lo, hi)

    def _binary(self, node, fn):
        args = []
        for name in node.input[:2]:
            c = self.const(name)
            if c is not None and c.ndim == 0 and np.issubdtype(c.dtype, np.floating):
                args.append(float(c))  # scalars stay Python numbers: no buffer, dtype follows the tensor
            else:
                args.append(self.value(name))
        self.env[node.output[0]] = self.call(fn, *args)

    def op_Add(self, node):
        self._binary(node, self.torch.add)

    def op_Sub(self, node):
        self._binary(node, self.torch.sub)

    def op_Mul(self, node):
        self._binary(node, self.torch.mul)

    def op_Div(self, node):
        self._binary(node, self.torch.div)

    def op_Pow(self, node):
        self._binary(node, self.torch.pow)

    def op_MatMul(self, node):
        self._binary(node, self.torch.matmul)

    def op_Gemm(self, node):
        torch = self.torch
        a = _attrs(node)
        alpha, beta = a.get('alpha', 1.0), a.get('beta', 1.0)
        if a.get('transA', 0):
            raise ConversionError(f"Gemm node '{node.name}' with transA=1 is not supported")
        w = self.need_const(node, 1, 'the weight').astype(np.float32)
        if not a.get('transB', 0):
            w = w.T
        c = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if len(node.input) > 2 and node.input[2] and c is None:
            raise ConversionError(f"Gemm node '{node.name}': a computed C input is not supported")
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=c is not None)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w * alpha)))
            if c is not None:
                lin.bias.copy_(torch.from_numpy(np.broadcast_to(c * beta, (w.shape[0],)).astype(np.float32)))
        name = self.attr_name(node.name or 'gemm')
        self.root.add_module(name, lin)
        self.env[node.output[0]] = self.graph.call_module(name, (self.value(node.input[0]),))

    def _pool_pads(self, node, nd):
        pads = list(_attrs(node).get('pads', [0] * (2 * nd)))
        if pads[:nd] != pads[nd:]:
            raise ConversionError(f"{node.op_type} node '{node.name}' has asymmetric pads {pads}; "
                                  'not supported')
        return tuple(pads[:nd])

    def op_MaxPool(self, node):
        a = _attrs(node)
        k = tuple(a['kernel_shape'])
        nd = len(k)
        if nd != 2:
            raise ConversionError(f"MaxPool node '{node.name}' is {nd}-D; only 2-D is supported")
        if len(node.output) > 1 and node.output[1]:
            raise ConversionError(f"MaxPool node '{node.name}' asks for indices; not supported")
        self._unary(node, self.torch.nn.functional.max_pool2d, kernel_size=k,
                    stride=tuple(a.get('strides', [1] * nd)), padding=self._pool_pads(node, nd),
                    dilation=tuple(a.get('dilations', [1] * nd)), ceil_mode=bool(a.get('ceil_mode', 0)))

    def op_AveragePool(self, node):
        a = _attrs(node)
        k = tuple(a['kernel_shape'])
        nd = len(k)
        if nd != 2:
            raise ConversionError(f"AveragePool node '{node.name}' is {nd}-D; only 2-D is supported")
        self._unary(node, self.torch.nn.functional.avg_pool2d, kernel_size=k,
                    stride=tuple(a.get('strides', [1] * nd)), padding=self._pool_pads(node, nd),
                    ceil_mode=bool(a.get('ceil_mode', 0)),
                    count_include_pad=bool(a.get('count_include_pad', 0)))

    def op_GlobalAveragePool(self, node):
        self._unary(node, self.torch.mean, dim=(2, 3), keepdim=True)

    def op_GlobalMaxPool(self, node):
        self._unary(node, self.torch.amax, dim=(2, 3), keepdim=True)

    def op_Flatten(self, node):
        self.env[node.output[0]] = self.call(_flatten, self.value(node.input[0]), _attrs(node).get('axis', 1))

    def op_Reshape(self, node):
        shape = tuple(int(v) for v in self.need_const(node, 1, 'the target shape'))
        self.env[node.output[0]] = self.call(_onnx_reshape, self.value(node.input[0]), shape)

    def op_Transpose(self, node):
        perm = _attrs(node).get('perm')
        x = self.value(node.input[0])
        if perm is None:
            raise ConversionError(f"Transpose node '{node.name}' without perm is not supported")
        self.env[node.output[0]] = self.call(self.torch.permute, x, tuple(perm))

    def op_Concat(self, node):
        xs = [self.value(n) for n in node.input]
        self.env[node.output[0]] = self.call(self.torch.cat, xs, dim=_attrs(node)['axis'])

    def op_Softmax(self, node):
        opset = next((o.version for o in self.model.opset_import if o.domain in ('', 'ai.onnx')), 13)
        axis = _attrs(node).get('axis', -1 if opset >= 13 else 1)
        if opset < 13 and axis != -1:
            raise ConversionError(f"Softmax node '{node.name}' uses opset<13 flattening semantics; re-export "
                                  'with opset 13+ or use the onnxruntime backend')
        self._unary(node, self.torch.softmax, dim=axis)

    def _axes(self, node, idx):
        a = _attrs(node)
        if 'axes' in a:
            return [int(v) for v in a['axes']]
        v = self.need_const(node, idx, 'axes') if len(node.input) > idx and node.input[idx] else None
        return None if v is None else [int(x) for x in v]

    def op_Squeeze(self, node):
        axes = self._axes(node, 1)
        if axes:
            self._unary(node, self.torch.squeeze, dim=tuple(axes))
        else:
            self._unary(node, self.torch.squeeze)

    def op_Unsqueeze(self, node):
        x = self.value(node.input[0])
        for ax in sorted(self._axes(node, 1)):
            x = self.call(self.torch.unsqueeze, x, ax)
        self.env[node.output[0]] = x

    def op_Slice(self, node):
        starts = [int(v) for v in self.need_const(node, 1, 'starts')]
        ends = [int(v) for v in self.need_const(node, 2, 'ends')]
        axes = self.need_const(node, 3, 'axes')
        steps = self.need_const(node, 4, 'steps')
        axes = list(range(len(starts))) if axes is None else [int(v) for v in axes]
        steps = [1] * len(starts) if steps is None else [int(v) for v in steps]
        if any(s < 1 for s in steps):
            raise ConversionError(f"Slice node '{node.name}' has negative steps; not supported")
        self.env[node.output[0]] = self.call(_slice, self.value(node.input[0]), starts, ends, axes, steps)

    def op_ReduceMean(self, node):
        a = _attrs(node)
        axes = self._axes(node, 1)
        self._unary(node, self.torch.mean, dim=tuple(axes), keepdim=bool(a.get('keepdims', 1)))

    def op_Resize(self, node):
        a = _attrs(node)

        def s(k, d):
            v = a.get(k, d)
            return v.decode() if isinstance(v, bytes) else v
        mode, ctm = s('mode', 'nearest'), s('coordinate_transformation_mode', 'half_pixel')
        scales = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        sizes = self.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        kw: dict[str, Any] = {}
        if sizes is not None and sizes.size:
            kw['size'] = tuple(int(v) for v in sizes[2:])
        elif scales is not None and scales.size:
            kw['scale_factor'] = tuple(float(v) for v in scales[2:])
        else:
            raise ConversionError(f"Resize node '{node.name}': scales/sizes must be constants")
        if mode == 'nearest' and ctm in ('asymmetric', 'half_pixel', 'tf_half_pixel_for_nn'):
            kw['mode'] = 'nearest' if ctm == 'asymmetric' else 'nearest-exact'
        elif mode == 'linear' and ctm in ('half_pixel', 'pytorch_half_pixel', 'align_corners'):
            kw['mode'] = 'bilinear'
            kw['align_corners'] = ctm == 'align_corners'
        else:
            raise ConversionError(f"Resize node '{node.name}': mode={mode} with "
                                  f'coordinate_transformation_mode={ctm} is not supported; use the '
                                  'onnxruntime backend')
        self._unary(node, self.torch.nn.functional.interpolate, **kw)


SUPPORTED_OPS = frozenset(n[3:] for n in dir(_Converter) if n.startswith('op_')) | {'Constant'}


def convert(model, fold_bn: bool = True, fuse: bool = True):
    """An onnx.ModelProto -> torch.fx.GraphModule returning a tuple of the graph's outputs, in order.

    The module's ``onnx_output_names`` lists the outputs' ONNX names; ``folded_bn`` counts the
    BatchNormalization layers folded into convolutions and ``fused_convs`` the Conv->Relu and
    Conv->Add->Relu chains turned into FusedConv2d modules (see set_cudnn_fusion).
    """
    c = _Converter(model, fold_bn=fold_bn, fuse=fuse)
    gm = c.run()
    gm.folded_bn = c.folded
    gm.fused_convs = c.fused
    return gm


_FUSED_CLS = None


def fused_conv2d_class():
    """nn.Conv2d whose forward is relu(conv(x) + bias [+ z]) in one cuDNN kernel when enabled on CUDA.

    Why: in eager PyTorch a channels-last conv with bias runs as conv + a broadcast bias add + (add) +
    relu, each a full pass over the activation; on ResNet-50 at batch 256 those element-wise passes
    took 70% of the GPU time (benchmarks/inference.py profile). cuDNN's runtime-fused
    conv-bias-add-relu (torch.cudnn_convolution_relu / _add_relu) writes the activation once.
    Disabled (or on the CPU) it computes the same thing with separate ops.
    """
    global _FUSED_CLS
    if _FUSED_CLS is None:
        import torch

        class FusedConv2d(torch.nn.Conv2d):
            use_cudnn = False

            def forward(self, x, z=None):
                if self.use_cudnn and x.is_cuda:
                    if z is None:
                        return torch.cudnn_convolution_relu(x, self.weight, self.bias, self.stride,
                                                            self.padding, self.dilation, self.groups)
                    return torch.cudnn_convolution_add_relu(x, self.weight, z, 1.0, self.bias, self.stride,
                                                            self.padding, self.dilation, self.groups)
                y = self._conv_forward(x, self.weight, self.bias)
                return torch.relu(y if z is None else y + z)

        _FUSED_CLS = FusedConv2d
    return _FUSED_CLS


def set_cudnn_fusion(module, enabled: bool) -> int:
    """Switch every FusedConv2d in `module` to the fused cuDNN kernels (or back); returns how many."""
    cls = fused_conv2d_class()
    n = 0
    for m in module.modules():
        if isinstance(m, cls):
            m.use_cudnn = bool(enabled)
            n += 1
    return n

"""Seed exercise 1 on our own pipeline: profile it, name the top-3 bottlenecks, fix them, measure again.

    python benchmarks/exercise1.py                      # on a GPU: torch backend, 1280x720 frames
    python benchmarks/exercise1.py --quick              # CPU smoke run (onnxruntime, small, few frames)
    python benchmarks/exercise1.py --fixes gpu_preprocess,fp16,cuda_graphs,gpu_nms

The pipeline is the inference node's path, in-process, one frame at a time (what an rclpy callback does):

    convert  sensor_msgs/Image -> HxWxC array
    pre      letterbox + normalize to the model input
    infer    the engine (detector, 320x320)
    post     score threshold + class-aware NMS, boxes mapped back to image pixels
    publish  results as std_msgs/Float32MultiArray through an rclpy publisher

Step 1 runs it as a first implementation would (copying conversion, numpy preprocessing on the CPU, FP32
eager engine, numpy NMS on the host) under StageProfiler (wall time, CUDA-event GPU time, NVTX ranges) with
the thread sampler naming the hot Python functions, and writes the report (isaac_perf.core.profiling.report).
Step 2 takes the report's top-3 bottleneck stages and enables the fix for each (`--fixes auto`), or the
fixes given, and runs the same benchmark again; detections are checked against step 1's. Fixes:

    zero_copy       convert: view the message buffer (np.frombuffer) instead of copying it
    gpu_preprocess  pre: upload uint8 once through pinned memory, letterbox/normalize on the GPU
    fp16            infer: FP16 weights and activations (tensor cores)
    cuda_graphs     infer: one CUDA graph launch per frame instead of one launch per layer
    gpu_nms         post: threshold + NMS on the GPU, only kept boxes copied to the host
    batch=N         all: N frames per call (throughput; per-frame latency grows)

Prints per-stage before/after with ratios and the engine's compute floor (FLOPs / peak), writes JSON
(default results/exercise1.json) and both reports (results/exercise1/before|after).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isaac_perf.core.inference.engines.base import EngineOptions, to_numpy  # noqa: E402
from isaac_perf.core.inference.engines.factory import create_engine, cuda_available  # noqa: E402
from isaac_perf.core.inference.frames import SyntheticSource  # noqa: E402
from isaac_perf.core.inference.postprocess import decode_detections, decode_detections_torch
from isaac_perf.core.inference.preprocess import PreprocessConfig, preprocess_numpy  # noqa: E402
from isaac_perf.core.inference.runner import detection_rows  # noqa: E402
from isaac_perf.core.profiling.profiler import StageProfiler  # noqa: E402
from isaac_perf.core.profiling.report import write_report  # noqa: E402
from isaac_perf.core.profiling.sampling import ThreadSampler  # noqa: E402

STAGES = ('convert', 'pre', 'infer', 'post', 'publish')
ALL_FIXES = ('zero_copy', 'gpu_preprocess', 'fp16', 'cuda_graphs', 'gpu_nms')
SCORE_THRESHOLD, IOU_THRESHOLD, MAX_DETECTIONS = 0.25, 0.45, 100  # inference_node's defaults


def fixes_for(stages: list[str], gpu: bool) -> list[str]:
    """The fix that answers a bottleneck in each named stage, on this device."""
    table = {'convert': ['zero_copy'], 'pre': ['gpu_preprocess'] if gpu else [],
             'infer': ['fp16', 'cuda_graphs'] if gpu else [],
             'post': ['gpu_nms'] if gpu else [], 'publish': []}  # CPU NMS already stops at max_detections
    out: list[str] = []
    for stage in stages:
        for fix in table.get(stage, []):
            if fix not in out:
                out.append(fix)
    return out


# --- messages -------------------------------------------------------------------------------------------
def make_messages(width: int, height: int, count: int) -> tuple[list[Any], bool]:
    """Pre-built sensor_msgs/Image frames (a stand-in with the same fields when rclpy is not installed)."""
    source = SyntheticSource(width, height, 'rgb8')
    arrays = [np.ascontiguousarray(source.frame(i)) for i in range(count)]
    try:
        from isaac_perf.ros.conversions import numpy_to_image
        return [numpy_to_image(a, 'rgb8', stamp_ns=i + 1) for i, a in enumerate(arrays)], True
    except ImportError:
        import array
        msgs = []
        for a in arrays:
            data = array.array('B')
            data.frombytes(a.tobytes())
            msgs.append(SimpleNamespace(height=height, width=width, encoding='rgb8', is_bigendian=0,
                                        step=width * 3, data=data))
        return msgs, False


def convert_copy(msg: Any) -> np.ndarray:
    """What a first implementation does: copy the message bytes into a new array."""
    return np.array(msg.data, dtype=np.uint8).reshape(msg.height, msg.width, -1)


def convert_view(msg: Any) -> np.ndarray:
    """Zero-copy: a numpy view on the message's buffer."""
    return np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)[:, :msg.width * 3] \
        .reshape(msg.height, msg.width, 3)


# --- the pipeline ---------------------------------------------------------------------------------------
class Pipeline:
    """convert -> pre -> infer -> post -> publish with the chosen fixes."""

    def __init__(self, fixes: set[str], args: argparse.Namespace, has_ros: bool, log=print):
        self.fixes = fixes
        self.batch = args.batch if 'batch' in fixes else 1
        gpu = args.device != 'cpu' and cuda_available()
        backend = args.backend
        if backend == 'auto':
            backend = 'torch' if gpu else 'onnxruntime'
        options = EngineOptions(device='cuda' if gpu else 'cpu',
                                precision='fp16' if 'fp16' in fixes else 'fp32',
                                cuda_graphs='cuda_graphs' in fixes, max_batch_size=max(self.batch, 1))
        self.engine = create_engine(backend, args.model, options, log=log)
        self.input = self.engine.inputs[0]
        _, channels, height, width = self.input.shape
        self.config = PreprocessConfig.for_detector(width, height)
        self.on_gpu = str(self.engine.device).startswith('cuda')
        self.torch_pre = None
        if 'gpu_preprocess' in fixes:
            if self.on_gpu:
                import torch

                from isaac_perf.core.inference.preprocess import TorchPreprocessor
                dtype = getattr(self.engine, 'dtype', torch.float32)
                channels_last = bool(getattr(self.engine, 'channels_last', False))
                self.torch_pre = TorchPreprocessor(self.config, device=str(self.engine.device), dtype=dtype,
                                                   channels_last=channels_last)
            else:
                log('gpu_preprocess needs the engine on a GPU: preprocessing stays on the CPU')
        if 'gpu_nms' in fixes and not self.on_gpu:
            log('gpu_nms needs the engine on a GPU: NMS stays on the host')
        self._buffer = np.empty((max(self.batch, 1), channels, height, width), np.float32)
        self.engine.warmup((self.batch,), 3)
        self.publish, self._node = self._publisher(has_ros)

    def _publisher(self, has_ros: bool):
        if not has_ros:
            return (lambda rows: rows.tobytes()), None  # serialization stand-in without rclpy
        import rclpy
        from rclpy.node import Node
        from std_msgs.msg import Float32MultiArray

        from isaac_perf.core.inference.runner import FrameResult
        from isaac_perf.ros.conversions import results_message
        self._context = rclpy.Context()
        rclpy.init(context=self._context)
        node = Node('exercise1', context=self._context)
        pub = node.create_publisher(Float32MultiArray, '/exercise1/detections', 10)
        return (lambda rows: pub.publish(results_message(FrameResult(rows, 'detection')))), node

    def process(self, msgs: list[Any], profiler: StageProfiler) -> list[np.ndarray]:
        stage = profiler.stage
        with stage('convert'):
            convert = convert_view if 'zero_copy' in self.fixes else convert_copy
            frames = [(convert(m), m.encoding) for m in msgs]
        with stage('pre'):
            if self.torch_pre is not None:
                batch, placements = self.torch_pre(frames)
            else:
                batch, placements = preprocess_numpy(frames, self.config, out=self._buffer)
        with stage('infer'):
            outputs = self.engine.infer({self.input.name: batch})
        with stage('post'):
            boxes, scores = outputs['boxes'], outputs['scores']
            n = len(msgs)
            if 'gpu_nms' in self.fixes and self.on_gpu:
                dets = decode_detections_torch(boxes[:n], scores[:n], SCORE_THRESHOLD, IOU_THRESHOLD,
                                               MAX_DETECTIONS)
            else:
                dets = decode_detections(to_numpy(boxes)[:n], to_numpy(scores)[:n], SCORE_THRESHOLD,
                                         IOU_THRESHOLD, MAX_DETECTIONS)
            rows_list = [detection_rows(det, placement)
                         for det, placement in zip(dets, placements, strict=True)]
        with stage('publish'):
            for rows in rows_list:
                self.publish(rows)
        return rows_list

    def close(self) -> None:
        self.engine.close()
        if self._node is not None:
            self._node.destroy_node()
            self._context.try_shutdown()


def run(pipeline: Pipeline, msgs: list[Any], frames: int, warmup: int, sample: bool) -> tuple[dict, list]:
    """Profile `frames` frames (after `warmup`); returns the profile and the first frames' detections."""
    for i in range(warmup):
        pipeline.process([msgs[i % len(msgs)]] * pipeline.batch, StageProfiler(enabled=False))
    profiler = StageProfiler(capacity=max(frames, 16))
    outputs: list[np.ndarray] = []
    sampler = ThreadSampler(rate_hz=200).start() if sample else None
    try:
        i = 0
        while i < frames:
            chunk = [msgs[(i + k) % len(msgs)] for k in range(pipeline.batch)]
            with profiler.frame():
                rows = pipeline.process(chunk, profiler)
            if len(outputs) < len(msgs):
                outputs.extend(rows)
            i += pipeline.batch
    finally:
        if sampler is not None:
            sampler.stop()
    profile = profiler.to_dict({'fixes': sorted(pipeline.fixes) or ['none'], 'batch': pipeline.batch,
                                'backend': pipeline.engine.backend, 'device': str(pipeline.engine.device)},
                               hot_functions=sampler.result(12) if sampler else None)
    return profile, outputs[:len(msgs)]


def agreement(before: list[np.ndarray], after: list[np.ndarray],
              tolerance_px: float = 2.0) -> dict[str, float]:
    """How far the fixed pipeline's detections are from the first run's (same frames)."""
    same_count = 0
    matched, total, score_err = 0, 0, []
    for a, b in zip(before, after, strict=False):
        same_count += len(a) == len(b)
        total += len(a)
        if len(a) and len(b):
            # Nearest same-class box by the largest corner difference (pixels); IoU would miss the
            # zero-area boxes that clipping to the image border produces.
            dist = np.abs(a[:, None, :4] - b[None, :, :4]).max(axis=2)
            dist = np.where(a[:, None, 5] == b[None, :, 5], dist, np.inf)
            best = dist.argmin(axis=1)
            ok = dist[np.arange(len(a)), best] <= tolerance_px
            matched += int(ok.sum())
            score_err.extend(np.abs(a[ok, 4] - b[best[ok], 4]).tolist())
    return {'frames': len(before), 'same_count_fraction': same_count / max(len(before), 1),
            'boxes_matched_fraction': matched / max(total, 1),
            'max_score_diff': float(max(score_err)) if score_err else 0.0}


def summarize(profile: dict) -> dict[str, float]:
    batch = profile['metadata']['batch']
    out = {name: float(np.mean(s['wall_ms'])) / batch for name, s in profile['stages'].items()}
    out['frame'] = float(np.mean(profile['frames']['wall_ms'])) / batch
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='CPU smoke run: small frames, few of them')
    parser.add_argument('--frames', type=int, default=300)
    parser.add_argument('--warmup', type=int, default=30)
    parser.add_argument('--width', type=int, default=1280)
    parser.add_argument('--height', type=int, default=720)
    parser.add_argument('--model', default='detector')
    parser.add_argument('--backend', default='auto', help="auto: torch on a GPU, onnxruntime on the CPU")
    parser.add_argument('--device', default='auto')
    parser.add_argument('--fixes', default='auto', help=f"'auto' (from the top-3 bottlenecks), 'none', or "
                        f"a comma list of {', '.join(ALL_FIXES)}, batch")
    parser.add_argument('--batch', type=int, default=4, help='frames per call when the batch fix is on')
    parser.add_argument('--peak-tflops', type=float, default=0.0,
                        help='device peak for the compute floor (0: H100 SXM dense FP16/TF32 if an H100 is '
                             'found, else no floor)')
    parser.add_argument('--out', default='results/exercise1.json')
    parser.add_argument('--report-dir', default='results/exercise1')
    args = parser.parse_args()
    if args.quick:
        args.frames, args.warmup = min(args.frames, 40), min(args.warmup, 5)
        args.width, args.height = min(args.width, 640), min(args.height, 480)
        if args.device == 'auto':
            args.device = 'cpu'
    msgs, has_ros = make_messages(args.width, args.height, 8)
    if not has_ros:
        print('rclpy is not installed: conversion uses a message stand-in and publish a serialization '
              'stand-in (install the ROS wheels for the real thing)')

    print(f'step 1: baseline ({args.frames} frames of {args.width}x{args.height})')
    base = Pipeline(set(), args, has_ros)
    gpu = base.on_gpu
    profile_before, dets_before = run(base, msgs, args.frames, args.warmup, sample=True)
    base.close()
    report_before, paths_before = write_report(profile_before, Path(args.report_dir) / 'before',
                                               title='Exercise 1: baseline')
    stage_ranking = [w for w in report_before.top_bottlenecks(10) if w in STAGES]
    top3 = stage_ranking[:3]
    # Fewer than three stages flagged: complete the list with the next largest stages by share.
    for s in sorted(report_before.stages, key=lambda s: -s.share):
        if len(top3) < 3 and s.name not in top3:
            top3.append(s.name)
    print('top-3 bottlenecks: ' + ', '.join(
        f'{name} ({100 * report_before.stage(name).share:.0f}% of the frame)' for name in top3))
    for r in report_before.recommendations[:6]:
        print(f'  {r.where}: {r.practice} ({r.cause})')

    if args.fixes == 'auto':
        fixes = fixes_for(top3, gpu)
    elif args.fixes == 'none':
        fixes = []
    else:
        fixes = [f.strip() for f in args.fixes.split(',') if f.strip()]
        unknown = [f for f in fixes if f not in ALL_FIXES + ('batch',)]
        if unknown:
            print(f'unknown fixes {unknown}: use {", ".join(ALL_FIXES)}, batch', file=sys.stderr)
            return 2
    print(f"step 2: with fixes {', '.join(fixes) or 'none'}")
    fixed = Pipeline(set(fixes), args, has_ros)
    profile_after, dets_after = run(fixed, msgs, args.frames, args.warmup, sample=True)  # same cost as step 1
    fixed.close()
    report_after, paths_after = write_report(profile_after, Path(args.report_dir) / 'after',
                                             title=f"Exercise 1: fixes {', '.join(fixes) or 'none'}")
    check = agreement(dets_before, dets_after)

    before, after = summarize(profile_before), summarize(profile_after)
    device = str(profile_before['metadata']['device'])
    gpu_name = ''
    if gpu:
        import torch
        gpu_name = torch.cuda.get_device_name(0)
    print(f"\nExercise 1 on {gpu_name or platform.processor() or platform.machine()} "
          f"({profile_before['metadata']['backend']} on {device}; ms per frame, mean)")
    print(f"{'stage':<10} {'before':>10} {'after':>10} {'before/after':>13}")
    rows = []
    for name in list(STAGES) + ['frame']:
        b, a = before.get(name, float('nan')), after.get(name, float('nan'))
        ratio = b / a if a else float('nan')
        rows.append({'stage': name, 'before_ms': b, 'after_ms': a, 'speedup': ratio})
        print(f'{name:<10} {b:>10.3f} {a:>10.3f} {ratio:>12.2f}x')
    improvement = 1.0 - after['frame'] / before['frame']
    print(f"throughput {1000 / before['frame']:.1f} -> {1000 / after['frame']:.1f} frames/s "
          f"({100 * improvement:+.1f}% frame time {'saved' if improvement > 0 else 'added'})")
    floor = None
    try:
        from isaac_perf.core.inference.models import model_flops, resolve_model
        flops = model_flops(str(resolve_model(args.model)), batch=1)
        peak = args.peak_tflops or (989.0 if 'H100' in gpu_name and 'fp16' in fixes
                                    else 494.0 if 'H100' in gpu_name else 0.0)
        if peak:
            floor = flops / (peak * 1e12) * 1e3
            print(f'engine compute floor: {flops / 1e9:.2f} GFLOP / {peak:.0f} TFLOPS = {floor * 1e3:.1f} us '
                  f"(infer after fixes: {after['infer']:.3f} ms = {after['infer'] / floor:.0f}x the floor)")
        else:
            print(f'engine: {flops / 1e9:.2f} GFLOP per frame (give --peak-tflops for the compute floor)')
    except Exception as exc:  # noqa: BLE001 - the floor is informative only
        print(f'(no compute floor: {exc})')
    print(f"detections vs baseline: {100 * check['boxes_matched_fraction']:.1f}% of boxes matched "
          f"(same class, corners within 2 px), max score difference {check['max_score_diff']:.4f}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        'benchmark': 'exercise1', 'device': device, 'gpu': gpu_name, 'cpu': platform.processor(),
        'frames': args.frames, 'size': [args.width, args.height], 'model': args.model,
        'top3_bottlenecks': top3, 'fixes': fixes, 'rows': rows, 'frame_time_saved_fraction': improvement,
        'engine_floor_ms': floor, 'agreement': check,
        'bottlenecks_before': [b['where'] + ':' + b['cause'] for b in
                               json.loads(Path(paths_before['json']).read_text())['bottlenecks']],
        'reports': {'before': paths_before['markdown'], 'after': paths_after['markdown']},
    }, indent=1))
    print(f"wrote {out}, {paths_before['markdown']}, {paths_after['markdown']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())

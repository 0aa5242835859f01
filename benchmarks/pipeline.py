"""The full perception pipeline with ROS: FPS, p50/p99 end-to-end latency, and where the time goes.

For each configuration (cameras x image size) three variants run in the same invocation:

- pipeline: image_source -> inference_node (bounded keep-newest queue, frames of all cameras batched,
  preprocessing on the GPU when the engine is there, backend/precision as given), composed on one
  MultiThreadedExecutor exactly as `isaac-perf run` does, with real DDS between the nodes.
- naive:    the same image_source, and an rclpy node that runs the model inside its subscription callback,
  one frame at a time, numpy preprocessing, FP32 (torch eager on a GPU, onnxruntime on the CPU): what a
  first ROS 2 port of a model usually looks like.
- limit:    no ROS at all: the pipeline's own preprocessing + engine on frames already in memory, batch =
  cameras (the most the pipeline could deliver), with the memcpy floor of touching each frame once.

End-to-end latency is camera stamp -> result (the arrival of the frame's stage report, which is published
right after its result). The stage split is transport (stamp -> the inference node's callback: publish,
serialization, DDS, deserialization), queue (waiting for the engine), pre, infer, post (NMS/top-k and
publishing the result).

    .venv/bin/python benchmarks/pipeline.py                  # 1 and 4 cameras at 640x480 and 1920x1080
    .venv/bin/python benchmarks/pipeline.py --quick          # small CPU run (2 cores, no GPU)
    .venv/bin/python benchmarks/pipeline.py --mode procs     # camera in its own process (IPC transport)
    .venv/bin/python benchmarks/pipeline.py --fp16 --cuda-graphs --backend torch --out results/pipeline.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

STAGES = ('transport', 'queue', 'pre', 'infer', 'post')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--cameras', help='comma-separated camera counts (default 1,4; --quick 1,2)')
    p.add_argument('--sizes', help='comma-separated WxH (default 640x480,1920x1080; --quick 320x240)')
    p.add_argument('--rate', type=float, default=30.0, help='frames per second per camera (default 30)')
    p.add_argument('--duration', type=float, help='measured seconds per run (default 10; --quick 4)')
    p.add_argument('--backend', default='auto', choices=('auto', 'onnxruntime', 'torch', 'tensorrt'))
    p.add_argument('--model', default='resnet50', choices=('resnet50', 'detector'))
    p.add_argument('--fp16', action='store_true', help='pipeline engine in FP16 (torch/TensorRT)')
    p.add_argument('--cuda-graphs', action='store_true', help='pipeline engine replays CUDA graphs (torch)')
    p.add_argument('--max-batch', type=int, default=0, help='pipeline max_batch_size (default = cameras)')
    p.add_argument('--variants', default='pipeline,naive,limit', help='which variants to run')
    p.add_argument('--mode', default='inproc', choices=('inproc', 'procs'),
                   help='inproc: camera in the same process (DDS intra-process path); procs: camera in '
                        'its own process (inter-process transport)')
    p.add_argument('--quick', action='store_true',
                   help='small CPU settings: 1 and 2 cameras at 320x240, 4 s runs, onnxruntime')
    p.add_argument('--out', default=str(ROOT / 'results' / 'pipeline.json'), help='JSON output path')
    args = p.parse_args(argv)
    quick = {'cameras': '1,2', 'sizes': '320x240', 'duration': 4.0}
    full = {'cameras': '1,4', 'sizes': '640x480,1920x1080', 'duration': 10.0}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:  # explicit options win over --quick
            setattr(args, name, value)
    if args.quick and args.backend == 'auto':
        args.backend = 'onnxruntime'
    return args


# --------------------------------------------------------------------------------------------- variants

def naive_factory(backend: str, model: str, device: str):
    """A factory for run_pipeline: the naive node, inference in the subscription callback."""
    import numpy as np
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float32MultiArray, Float64MultiArray

    from isaac_perf.core.inference import models
    from isaac_perf.core.inference.engines.base import EngineOptions, to_numpy
    from isaac_perf.core.inference.engines.factory import create_engine
    from isaac_perf.core.inference.postprocess import decode_detections, topk
    from isaac_perf.core.inference.preprocess import PreprocessConfig, preprocess_numpy
    from isaac_perf.core.inference.runner import DropCounter, FrameResult, detection_rows
    from isaac_perf.core.telemetry import stage_times
    from isaac_perf.ros.conversions import image_to_numpy, results_message, stage_message, stamp_to_ns

    class NaiveInferenceNode(Node):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__('naive_inference', automatically_declare_parameters_from_overrides=True,
                             **kwargs)
            topics = [t for t in self.get_parameter('input_topics').value if t]
            path = models.build_resnet50() if model == 'resnet50' else models.build_detector()
            self._engine = create_engine(backend, str(path), EngineOptions(device=device, max_batch_size=1))
            self.task = 'classification' if model == 'resnet50' else 'detection'
            self._runner = self  # report reads ._runner.task
            self.config = PreprocessConfig() if model == 'resnet50' else PreprocessConfig.for_detector()
            self.input_name = self._engine.inputs[0].name
            self.frames_received = self.frames_processed = 0
            self.drops = DropCounter()  # the naive node never drops on purpose: DDS does, uncounted
            self.engine_ready = threading.Event()
            self.engine_ready.set()
            self.engine_error = ''
            self.output_topics = [f'{t}/detections' for t in topics]
            self._pubs = [self.create_publisher(Float32MultiArray, t, 10) for t in self.output_topics]
            self._stage_pub = self.create_publisher(Float64MultiArray, '~/stage_times', 10)
            # The usual first port: default callback group, sensor-data QoS, work in the callback.
            self._subs = [self.create_subscription(Image, t, lambda m, i=i: self._on_image(m, i),
                                                   qos_profile_sensor_data) for i, t in enumerate(topics)]
            # A naive node is spun by rclpy.spin (one thread). This run shares a MultiThreadedExecutor, whose
            # pool would move the callback between threads and make CUDA re-create its per-thread state
            # (cuDNN handles and plans) each time, a cost the naive node does not really pay: one thread.
            self._one_thread = ThreadPoolExecutor(max_workers=1)

        def _on_image(self, msg: Any, index: int) -> None:
            self._one_thread.submit(self._infer_in_callback, msg, index).result()

        def _infer_in_callback(self, msg: Any, index: int) -> None:
            received_ns = self.get_clock().now().nanoseconds
            self.frames_received += 1
            t0 = time.perf_counter()
            batch, placements = preprocess_numpy([(image_to_numpy(msg), msg.encoding)], self.config)
            t1 = time.perf_counter()
            outputs = self._engine.infer({self.input_name: batch})
            t2 = time.perf_counter()
            if self.task == 'classification':
                ids, scores = topk(to_numpy(next(iter(outputs.values()))), 5)
                rows = np.stack([ids[0].astype(np.float32), scores[0]], axis=1)
            else:
                det = decode_detections(to_numpy(outputs['boxes']), to_numpy(outputs['scores']))[0]
                rows = detection_rows(det, placements[0])
            self._pubs[index].publish(results_message(FrameResult(rows, self.task)))
            t3 = time.perf_counter()
            stamp_ns = stamp_to_ns(msg.header.stamp)
            report = stage_times.StageReport(stamp_ns, 1, {
                'transport': (received_ns - stamp_ns) / 1e6, 'queue': 0.0, 'pre': (t1 - t0) * 1e3,
                'infer': (t2 - t1) * 1e3, 'post': (t3 - t2) * 1e3})
            self._stage_pub.publish(stage_message(report))
            self.frames_processed += 1

        def destroy_node(self) -> None:
            self._one_thread.shutdown(wait=True)
            self._engine.close()
            super().destroy_node()

    return NaiveInferenceNode


class SourceProcess:
    """image_source in its own process (--mode procs), shaped like the node for run_pipeline's report."""

    def __init__(self, context: Any = None, parameter_overrides: list[Any] | None = None):
        import yaml
        values = {p.name: p.value for p in parameter_overrides or []}
        self.rate_hz = float(values.get('rate_hz', 30.0))
        self.camera_count = int(values.get('camera_count', 1))
        fd, self.params_file = tempfile.mkstemp(suffix='.yaml')
        with os.fdopen(fd, 'w') as f:
            yaml.safe_dump({'image_source': {'ros__parameters': values}}, f)
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'isaac_perf.nodes.image_source', '--ros-args', '--params-file',
             self.params_file, '--log-level', 'warn'], cwd=ROOT)
        self.started = time.monotonic()
        self.stopped_at: float | None = None
        self.missed_ticks = 0

    @property
    def frames_published(self) -> int:
        """Estimated from the rate (the process does not report back): marks transport drops as such."""
        end = self.stopped_at or time.monotonic()
        return int((end - self.started) * self.rate_hz) * self.camera_count

    def stop(self) -> None:
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            os.unlink(self.params_file)

    def destroy_node(self) -> None:
        self.stop()


def run_variant(variant: str, args: argparse.Namespace, cameras: int, width: int, height: int,
                device: str) -> dict[str, Any]:
    from isaac_perf.app import run
    from isaac_perf.core.paths import config_file
    params = run.pipeline_params(config_file('pipeline.yaml'), backend=args.backend, model=args.model,
                                 cameras=cameras, rate=args.rate, width=width, height=height)
    infer = params['inference_node']
    infer.update(max_batch_size=args.max_batch or cameras, enable_fp16=args.fp16,
                 cuda_graphs=args.cuda_graphs, queue_depth=1, diagnostics_period_s=1.0)
    factory = naive_factory(args.backend, args.model, device) if variant == 'naive' else None
    source = SourceProcess if args.mode == 'procs' else None
    return run.run_pipeline(params, args.duration, monitor=False, inference_factory=factory,
                            source_factory=source)


def measure_limit(args: argparse.Namespace, cameras: int, width: int, height: int,
                  iterations: int = 30) -> dict[str, Any]:
    """The pipeline's preprocessing + engine on in-memory frames, batch = cameras; no ROS."""
    import numpy as np

    from isaac_perf.core.inference import models
    from isaac_perf.core.inference.engines.base import EngineOptions
    from isaac_perf.core.inference.engines.factory import create_engine
    from isaac_perf.core.inference.frames import SyntheticSource
    from isaac_perf.core.inference.runner import InferenceRunner
    path = models.build_resnet50() if args.model == 'resnet50' else models.build_detector()
    engine = create_engine(args.backend, str(path), EngineOptions(
        precision='fp16' if args.fp16 else 'fp32', max_batch_size=max(cameras, args.max_batch or cameras),
        cuda_graphs=args.cuda_graphs))
    try:
        runner = InferenceRunner(engine)
        frames = [(np.ascontiguousarray(SyntheticSource(width, height, seed=i).frame(0)), 'rgb8')
                  for i in range(cameras)]
        for _ in range(3):
            runner.run(frames)
        samples = [runner.run(frames)[1] for _ in range(iterations)]
        stages = {k: statistics.median(s[k] for s in samples) for k in ('pre', 'infer', 'post')}
        total = sum(stages.values())
        frame = frames[0][0]
        copy = np.empty_like(frame)
        t0 = time.perf_counter()
        for _ in range(20):
            np.copyto(copy, frame)
        memcpy_ms = (time.perf_counter() - t0) / 20 * 1e3 * cameras
        return {'variant': 'limit', 'cameras': cameras, 'width': width, 'height': height,
                'backend': engine.backend, 'device': str(engine.device), 'fps': cameras * 1e3 / total,
                'latency_ms': {'p50': total + memcpy_ms, 'p90': math.nan, 'p99': math.nan, 'max': math.nan,
                               'min': math.nan, 'mean': total + memcpy_ms},
                'stages_ms': {'transport': {'mean': memcpy_ms}, 'queue': {'mean': 0.0},
                              **{k: {'mean': v} for k, v in stages.items()}},
                'frames_published': 0, 'frames_received': 0, 'frames_processed': iterations * cameras,
                'drops': {'total': 0}, 'input_fps': math.nan}
    finally:
        engine.close()


# ------------------------------------------------------------------------------------------- output

def _f(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return '-'
    return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'variant':9} {'cams':>4} {'size':>10} {'in fps':>7} {'out fps':>7} {'p50 ms':>8} "
            f"{'p99 ms':>8} "
            + ' '.join(f'{s:>9}' for s in STAGES) + f" {'drops':>6}")
    lines = [head, '-' * len(head)]
    for r in rows:
        st = r.get('stages_ms', {})
        lines.append(
            f"{r['variant']:9} {r['cameras']:>4} {str(r['width']) + 'x' + str(r['height']):>10} "
            f"{_f(r.get('input_fps')):>7} {_f(r.get('fps')):>7} {_f(r['latency_ms']['p50']):>8} "
            f"{_f(r['latency_ms']['p99']):>8} "
            + ' '.join(f"{_f(st.get(s, {}).get('mean'), 2):>9}" for s in STAGES)
            + f" {r['drops']['total']:>6}")
    return '\n'.join(lines)


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    keyed = {(r['variant'], r['cameras'], r['width'], r['height']): r for r in rows}
    for (variant, cams, w, h), r in keyed.items():
        if variant != 'pipeline':
            continue
        naive = keyed.get(('naive', cams, w, h))
        limit = keyed.get(('limit', cams, w, h))
        parts = [f'{cams} cam {w}x{h}:']
        if naive and naive.get('fps') and math.isfinite(naive['fps']) and naive['fps'] > 0:
            parts.append(f"pipeline/naive FPS {r['fps'] / naive['fps']:.2f}x")
            if math.isfinite(naive['latency_ms']['p99']) and r['latency_ms']['p99'] > 0:
                ratio = naive['latency_ms']['p99'] / r['latency_ms']['p99']
                parts.append(f'naive/pipeline p99 latency {ratio:.2f}x')
        if limit and math.isfinite(r.get('fps', math.nan)):
            parts.append(f"pipeline FPS = {100 * r['fps'] / limit['fps']:.0f}% of the no-ROS limit "
                         f"({limit['fps']:.1f} img/s)")
            if r.get('input_fps') and math.isfinite(r['input_fps']):
                parts.append(f"(input {r['input_fps']:.1f} frames/s)")
        out.append(' '.join(parts))
    return out


def ros2_benchmark_fields(r: dict[str, Any]) -> dict[str, Any]:
    """ros2_benchmark's metric names beside our percentiles."""
    lat = r['latency_ms']
    return {'MEAN_FRAME_RATE': r.get('fps'), 'NUM_MISSED_FRAMES': r['drops']['total'],
            'MEAN_LATENCY': lat['mean'], 'MAX_LATENCY': lat['max'], 'MIN_LATENCY': lat['min'],
            'p50_LATENCY': lat['p50'], 'p90_LATENCY': lat['p90'], 'p99_LATENCY': lat['p99']}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {'host': platform.node(), 'python': platform.python_version(),
                            'cpu_count': os.cpu_count(), 'platform': platform.platform()}
    try:
        import torch
        if torch.cuda.is_available():
            info['gpu'] = torch.cuda.get_device_name(0)
            info['torch'] = torch.__version__
    except ImportError:
        pass
    return info



def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    from isaac_perf.core.inference.engines.factory import cuda_available
    device = 'cuda' if cuda_available() and args.backend != 'onnxruntime' else 'cpu'
    variants = [v.strip() for v in args.variants.split(',') if v.strip()]
    sizes = [tuple(int(x) for x in s.lower().split('x')) for s in args.sizes.split(',')]
    cams = [int(c) for c in args.cameras.split(',')]
    rows: list[dict[str, Any]] = []
    for width, height in sizes:
        for cameras in cams:
            for variant in variants:
                print(f'-- {variant}: {cameras} camera(s) {width}x{height} at {args.rate:g} Hz, '
                      f'{args.duration:g} s ({args.mode})', flush=True)
                if variant == 'limit':
                    row = measure_limit(args, cameras, width, height)
                else:
                    row = run_variant(variant, args, cameras, width, height, device)
                    row['variant'] = variant
                rows.append(row)
    print()
    print(table(rows))
    print()
    for line in ratios(rows):
        print(line)
    result = {'benchmark': 'pipeline', 'date': time.strftime('%Y-%m-%d %H:%M:%S'),
              'command': ' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
              'machine': machine(), 'settings': vars(args),
              'results': [{**ros2_benchmark_fields(r), **r} for r in rows], 'ratios': ratios(rows)}
    from isaac_perf.core.profiling.report import json_safe
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(result), indent=2) + '\n')
    print(f'\nwrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

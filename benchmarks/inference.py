"""ResNet-50 inference: throughput and latency by batch size per backend and optimization, vs the naive way.

Rows (all on the same generated ResNet-50, 224x224, ~4.09 GMAC = 8.18 GFLOP per image):

* ``naive``: what an rclpy callback typically does per frame: numpy frame -> ``.cuda()`` -> torch eager FP32
  (NCHW, BatchNorm not folded, cuDNN autotuning off) -> ``.cpu().numpy()``, one frame per call.
* ``torch fp32`` / ``torch fp16`` / ``torch fp16+graph``: the torch backend (BN folded, channels-last,
  cuDNN benchmark mode), eager or replaying one CUDA graph per batch size.
* ``torch fp16 aoti-<mode>`` (stage ``compile``): AOTInductor-compiled, cached on disk (compile time and the
  cached reload time are reported), optionally with a CUDA graph on top.
* ``onnxruntime cpu``: the embedded default.

GPU rows are timed with CUDA events on device-resident random inputs after warm-up: ``gpu_ms`` is the
median per-call time (call issued, then synchronized), ``img_s`` the throughput of ``--stream-iters``
calls issued back to back. ``wall_ms`` (host clock around the synchronized call) is what a caller waits.
The physical floor is model FLOPs / the measured FP16 matrix rate (``ceiling`` stage); ``pct_peak`` is
achieved FLOP/s over that rate. Correctness is checked first against onnxruntime FP32 on the CPU.

Usage (GPU machine): ``python3 benchmarks/inference.py --out $OUT/inference.json``
Stages: ceiling, correctness, naive, ort, torch, e2e, profile, compile (default: all but compile).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isaac_perf.core.inference import models  # noqa: E402
from isaac_perf.core.inference.engines.base import EngineOptions, to_numpy  # noqa: E402
from isaac_perf.core.telemetry.stats import percentile  # noqa: E402

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
REPORTED_PEAK_TFLOPS = 733.0  # the H100's FP16 dense matrix rate measured earlier in this project


class Bench:
    def __init__(self, args) -> None:
        import torch
        self.torch = torch
        self.args = args
        self.results: dict = {'schema': 'isaac_perf.inference/1', 'rows': [], 'args': vars(args)}
        self.model_path = str(models.build_resnet50(cache_dir=args.model_dir))
        self.flops = models.model_flops(self.model_path)
        self.peak_tflops = REPORTED_PEAK_TFLOPS
        self.cuda = torch.cuda.is_available()
        env = {'python': platform.python_version(), 'torch': torch.__version__, 'numpy': np.__version__,
               'host': platform.node(), 'cpus': os.cpu_count(), 'model': os.path.basename(self.model_path),
               'model_flops_per_image': self.flops, 'date': time.strftime('%Y-%m-%d %H:%M:%S')}
        if self.cuda:
            p = torch.cuda.get_device_properties(0)
            env.update(gpu=p.name, sms=p.multi_processor_count, gpu_mem_gib=round(p.total_memory / 2**30, 1),
                       cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
        try:
            import onnxruntime
            env['onnxruntime'] = onnxruntime.__version__
        except ImportError:
            pass
        self.results['env'] = env
        print(json.dumps(env), flush=True)

    def save(self) -> None:
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.results, indent=1, default=str))

    def row(self, **kw) -> dict:
        b = kw.get('batch', 1)
        if kw.get('img_s'):
            kw['tflops'] = kw['img_s'] * self.flops / 1e12
            kw['pct_peak'] = 100.0 * kw['tflops'] / self.peak_tflops
        kw.setdefault('batch', b)
        self.results['rows'].append(kw)
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in kw.items()}
        print('ROW', json.dumps(shown), flush=True)
        self.save()
        return kw

    # ----------------------------------------------------------------------------------------- stages
    def ceiling(self) -> None:
        """Measured FP16 matrix rate and copy bandwidth: the two physical ceilings."""
        torch = self.torch
        n = 8192
        a = torch.randn(n, n, device='cuda', dtype=torch.float16)
        b = torch.randn(n, n, device='cuda', dtype=torch.float16)
        for _ in range(3):
            a @ b
        ts = []
        for _ in range(10):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            a @ b
            e.record()
            e.synchronize()
            ts.append(s.elapsed_time(e))
        tflops = 2 * n**3 / (statistics.median(ts) / 1e3) / 1e12
        x = torch.empty(2**30 // 2, dtype=torch.float16, device='cuda').normal_()
        y = torch.empty_like(x)
        for _ in range(3):
            y.copy_(x)
        ts = []
        for _ in range(10):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            y.copy_(x)
            e.record()
            e.synchronize()
            ts.append(s.elapsed_time(e))
        gbs = 2 * x.numel() * 2 / (statistics.median(ts) / 1e3) / 1e9
        del a, b, x, y
        torch.cuda.empty_cache()
        self.results['ceiling'] = {'fp16_matmul_tflops': tflops, 'copy_gb_s': gbs,
                                   'reported_fp16_tflops': REPORTED_PEAK_TFLOPS}
        print(f'CEILING fp16 matmul {tflops:.0f} TFLOP/s (8192^3), copy {gbs:.0f} GB/s; '
              f'peak used for pct_peak: {self.peak_tflops:.0f} TFLOP/s', flush=True)
        self.save()

    def correctness(self) -> None:
        """Each torch configuration against onnxruntime FP32 (CPU) on fresh random inputs."""
        from isaac_perf.core.inference.engines.factory import create_engine
        ort = create_engine('onnxruntime', self.model_path, EngineOptions(device='cpu'))
        feeds = {'images': np.random.default_rng(11).standard_normal((4, 3, 224, 224)).astype(np.float32)}
        ref = ort.infer(feeds)['logits']
        checks = {}
        configs = {'fp32': {}, 'fp16': {'precision': 'fp16'},
                   'fp16 unfused': {'precision': 'fp16', 'extra': {'cudnn_fusion': False}},
                   'fp16+graph': {'precision': 'fp16', 'cuda_graphs': True}}
        for name, kw in configs.items():
            eng = create_engine('torch', self.model_path, EngineOptions(device='cuda', **kw))
            out = to_numpy(eng.infer(feeds)['logits'])
            rel = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
            top1 = float((out.argmax(1) == ref.argmax(1)).mean())
            checks[name] = {'rel_l2_vs_ort_fp32': rel, 'top1_agreement': top1,
                            'finite': bool(np.isfinite(out).all())}
            print(f'CHECK {name}: rel L2 {rel:.2e}, top-1 agreement {top1:.2f}', flush=True)
            eng.close()
        self.results['correctness'] = checks
        self.save()

    def naive(self) -> None:
        """One frame per call, eager FP32, unfolded BN, NCHW, host round trip: the rclpy-callback way."""
        import onnx
        torch = self.torch
        from isaac_perf.core.inference.engines.onnx_to_torch import convert
        torch.backends.cudnn.benchmark = False
        module = convert(onnx.load(self.model_path), fold_bn=False).eval().cuda()
        rng = np.random.default_rng(0)
        frames = [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(8)]
        walls = []
        with torch.no_grad():
            for i in range(self.args.naive_iters + 10):
                t0 = time.perf_counter()
                x = torch.from_numpy(frames[i % 8]).cuda()
                out = module(x)[0].cpu().numpy()
                dt = (time.perf_counter() - t0) * 1e3
                if i >= 10:
                    walls.append(dt)
        assert np.isfinite(out).all()
        med = statistics.median(walls)
        self.results['naive'] = self.row(variant='naive eager fp32 (rclpy-callback style)', backend='torch',
                                         batch=1, wall_ms=med, wall_p99_ms=percentile(walls, 99),
                                         img_s=1e3 / med)
        del module
        torch.backends.cudnn.benchmark = True
        torch.cuda.empty_cache()

    def ort(self) -> None:
        from isaac_perf.core.inference.engines.factory import create_engine
        eng = create_engine('onnxruntime', self.model_path, EngineOptions(device='cpu', max_batch_size=64))
        for b in self.args.ort_batches:
            x = {'images': np.random.default_rng(b).standard_normal((b, 3, 224, 224)).astype(np.float32)}
            eng.infer(x)
            walls = []
            reps = max(3, min(20, int(40 / b)))
            for _ in range(reps):
                t0 = time.perf_counter()
                eng.infer(x)
                walls.append((time.perf_counter() - t0) * 1e3)
            med = statistics.median(walls)
            self.row(variant='onnxruntime cpu fp32', backend='onnxruntime', batch=b, wall_ms=med,
                     wall_p99_ms=percentile(walls, 99), img_s=b * 1e3 / med)

    def _time_engine(self, eng, variant: str, batch: int, extra: dict | None = None) -> dict:
        """CUDA-event timing of engine.infer_async on device-resident inputs."""
        torch = self.torch
        stream = torch.cuda.current_stream()
        xs = [torch.randn(batch, 3, 224, 224, device='cuda').to(eng.dtype).contiguous(
            memory_format=torch.channels_last if eng.channels_last else torch.contiguous_format)
            for _ in range(2)]  # two input sets, alternated
        for i in range(5):
            eng.infer_async({'images': xs[i % 2]}, stream)
        torch.cuda.synchronize()
        gpu, wall = [], []
        iters = self.args.iters if batch <= 32 else max(10, self.args.iters // 4)
        for i in range(iters):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            s.record(stream)
            eng.infer_async({'images': xs[i % 2]}, stream)
            e.record(stream)
            e.synchronize()
            wall.append((time.perf_counter() - t0) * 1e3)
            gpu.append(s.elapsed_time(e))
        n = self.args.stream_iters if batch <= 32 else max(10, self.args.stream_iters // 4)
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(stream)
        for i in range(n):
            eng.infer_async({'images': xs[i % 2]}, stream)
        e.record(stream)
        e.synchronize()
        stream_ms = s.elapsed_time(e) / n
        row = dict(variant=variant, backend='torch', batch=batch, gpu_ms=statistics.median(gpu),
                   gpu_p99_ms=percentile(gpu, 99), wall_ms=statistics.median(wall),
                   wall_p99_ms=percentile(wall, 99),
                   stream_ms=stream_ms, img_s=batch * 1e3 / stream_ms)
        row.update(extra or {})
        return self.row(**row)

    def torch_rows(self) -> None:
        from isaac_perf.core.inference.engines.factory import create_engine
        torch = self.torch
        max_b = max(self.args.batches)
        nofuse = {'cudnn_fusion': False}
        configs = [('torch fp32', {}, {}),
                   ('torch fp16 unfused', {'precision': 'fp16'}, nofuse),
                   ('torch fp16+graph unfused', {'precision': 'fp16', 'cuda_graphs': True}, nofuse),
                   ('torch fp16', {'precision': 'fp16'}, {}),
                   ('torch fp16+graph', {'precision': 'fp16', 'cuda_graphs': True}, {})]
        for variant, kw, extra in configs:
            opts = EngineOptions(device='cuda', max_batch_size=max_b, extra={'zero_copy': True, **extra},
                                 **kw)
            eng = create_engine('torch', self.model_path, opts)
            print(f'ENGINE {variant}: {eng.describe()}', flush=True)
            for b in self.args.batches:
                if variant == 'torch fp32' and b > 64 and not self.args.full_fp32:
                    continue
                if variant.endswith('unfused') and b not in (1, 8, 64, max_b):
                    continue  # the comparison points; the fused rows cover every size
                self._time_engine(eng, variant, b)
            eng.close()
            torch.cuda.empty_cache()

    def e2e(self) -> None:
        """Camera frames to top-5: uint8 640x480 rgb8 -> GPU preprocess -> FP16 graph -> top-5 on host."""
        from isaac_perf.core.inference.engines.factory import create_engine
        from isaac_perf.core.inference.postprocess import topk
        from isaac_perf.core.inference.preprocess import PreprocessConfig, TorchPreprocessor
        torch = self.torch
        eng = create_engine('torch', self.model_path, EngineOptions(device='cuda', precision='fp16',
                                                                    cuda_graphs=True, max_batch_size=8))
        pre = TorchPreprocessor(PreprocessConfig(), device='cuda', dtype=torch.float16, channels_last=True)
        rng = np.random.default_rng(0)
        for b in (1, 4):
            frames = [[(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), 'rgb8') for _ in range(b)]
                      for _ in range(4)]
            walls, pre_ms = [], []
            for i in range(self.args.iters + 10):
                t0 = time.perf_counter()
                x, _ = pre(frames[i % 4])
                t1 = time.perf_counter()
                logits = eng.infer({'images': x})['logits']
                ids, scores = topk(logits.cpu().numpy(), 5)
                if i >= 10:
                    walls.append((time.perf_counter() - t0) * 1e3)
                    pre_ms.append((t1 - t0) * 1e3)
            med = statistics.median(walls)
            self.row(variant='e2e rgb8 640x480 -> gpu preprocess -> fp16+graph -> top5', backend='torch',
                     batch=b, wall_ms=med, wall_p99_ms=percentile(walls, 99),
                     preprocess_enqueue_ms=statistics.median(pre_ms), img_s=b * 1e3 / med)
        eng.close()

    def profile(self) -> None:
        """Kernel-time breakdown (torch.profiler) of FP16 eager at the largest batch and of batch 1."""
        from torch.profiler import ProfilerActivity, profile

        from isaac_perf.core.inference.engines.factory import create_engine
        torch = self.torch
        out = {}
        for b, graphs in ((max(self.args.batches), False), (1, True)):
            eng = create_engine('torch', self.model_path, EngineOptions(device='cuda', precision='fp16',
                                                                        cuda_graphs=graphs, max_batch_size=b,
                                                                        extra={'zero_copy': True}))
            x = torch.randn(b, 3, 224, 224, device='cuda', dtype=torch.float16).contiguous(
                memory_format=torch.channels_last)
            for _ in range(5):
                eng.infer_async({'images': x})
            torch.cuda.synchronize()
            reps = 5
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(reps):
                    eng.infer_async({'images': x})
                torch.cuda.synchronize()
            kernels = {}
            for ev in prof.key_averages():
                t = getattr(ev, 'device_time_total', None) or getattr(ev, 'cuda_time_total', 0)
                if t and ev.key and not ev.key.startswith(('ProfilerStep', 'cudaGraph')):
                    kernels[ev.key] = kernels.get(ev.key, 0.0) + t / 1e3 / reps  # ms per batch
            cats: dict[str, float] = {}
            for k, v in kernels.items():
                cats[_category(k)] = cats.get(_category(k), 0.0) + v
            total = sum(kernels.values())
            top = sorted(kernels.items(), key=lambda kv: -kv[1])[:12]
            out[f'b{b}{"_graph" if graphs else ""}'] = {
                'kernel_ms_per_batch': total,
                'by_category_ms': dict(sorted(cats.items(), key=lambda kv: -kv[1])),
                'top_kernels_ms': [(k[:120], v) for k, v in top]}
            print(f'PROFILE b{b} graphs={graphs}: kernel time {total:.3f} ms/batch; '
                  + ', '.join(f'{c} {v:.3f}' for c, v in sorted(cats.items(), key=lambda kv: -kv[1])),
                  flush=True)
            for k, v in top[:8]:
                print(f'   {v:8.3f} ms  {k[:110]}', flush=True)
            eng.close()
        self.results['profile'] = out
        self.save()

    def compile_rows(self) -> None:
        """AOTInductor packages (compile once, cached on disk), with and without a CUDA graph on top."""
        from isaac_perf.core.inference.engines.factory import create_engine
        torch = self.torch
        for spec in self.args.compile:
            mode, b = spec.split(':')
            b = int(b)
            logs: list[str] = []
            opts = EngineOptions(device='cuda', precision='fp16', compile=mode, max_batch_size=b,
                                 cache_dir=self.args.cache_dir, extra={'zero_copy': True,
                                                                       'compile_batch_sizes': (b,)})
            t0 = time.perf_counter()
            eng = create_engine('torch', self.model_path, opts, log=logs.append)
            build_s = time.perf_counter() - t0
            print('\n'.join('  ' + m for m in logs), flush=True)
            if b not in eng.compile_seconds or eng._compiled.get(b) is eng.module:
                print(f'COMPILE {mode} b{b} failed; skipped', flush=True)
                continue
            # correctness of the compiled package against the eager FP16 engine
            ref_eng = create_engine('torch', self.model_path, EngineOptions(device='cuda', precision='fp16',
                                                                            max_batch_size=b))
            feeds = {'images': np.random.default_rng(5).standard_normal((b, 3, 224, 224)).astype(np.float32)}
            a, r = to_numpy(eng.infer(feeds)['logits']), to_numpy(ref_eng.infer(feeds)['logits'])
            rel = float(np.linalg.norm(a - r) / np.linalg.norm(r))
            ref_eng.close()
            extra = {'compile_s': eng.compile_seconds[b], 'engine_create_s': build_s,
                     'rel_l2_vs_eager_fp16': rel}
            self._time_engine(eng, f'torch fp16 aoti-{mode}', b, extra)
            eng.close()
            t0 = time.perf_counter()  # a restart: the package comes from the disk cache
            eng = create_engine('torch', self.model_path, opts, log=logs.append)
            reload_s = time.perf_counter() - t0
            self.results.setdefault('compile', {})[f'{mode}:{b}'] = {
                'compile_s': extra['compile_s'], 'cached_reload_s': reload_s,
                'recompiled_on_reload': eng.compile_seconds.get(b, 0) > 0, 'rel_l2_vs_eager_fp16': rel}
            print(f'COMPILE {mode} b{b}: compile {extra["compile_s"]:.0f} s, cached reload {reload_s:.1f} s',
                  flush=True)
            eng.close()
            torch.cuda.empty_cache()


def _category(name: str) -> str:
    n = name.lower()
    if 'pool' in n:  # before the conv test: cuDNN-style names like max_pool_forward_nhwc contain 'nhwc'
        return 'pool/reduce'
    if any(k in n for k in ('conv', 'xmma', 'implicit', 'cudnn', 'sm90', 'sm80', 'hmma', 'nhwc', 'fprop',
                            'cutlass', 'triton_tem')):
        return 'conv/gemm'
    if 'gemm' in n or 'matmul' in n or 'linear' in n:
        return 'conv/gemm'
    if 'pool' in n or 'reduce' in n or 'mean' in n:
        return 'pool/reduce'
    if 'copy' in n or 'memcpy' in n or 'memset' in n or 'cat' in n:
        return 'copy'
    if any(k in n for k in ('elementwise', 'relu', 'add', 'clamp', 'mul', 'triton_poi', 'vectorized')):
        return 'elementwise'
    return 'other'


def print_table(results: dict) -> None:
    rows = results['rows']
    naive = results.get('naive')
    print()
    print(f'{"variant":58s} {"batch":>5s} {"gpu ms":>8s} {"wall ms":>8s} {"p99 ms":>8s} {"img/s":>9s} '
          f'{"%peak":>6s} {"x naive":>8s}')
    for r in rows:
        xn = r['img_s'] / naive['img_s'] if naive and r.get('img_s') else float('nan')
        print(f'{r["variant"][:58]:58s} {r["batch"]:5d} {r.get("gpu_ms", float("nan")):8.3f} '
              f'{r.get("wall_ms", float("nan")):8.3f} {r.get("wall_p99_ms", float("nan")):8.3f} '
              f'{r.get("img_s", float("nan")):9.0f} {r.get("pct_peak", float("nan")):6.1f} {xn:8.1f}')
    c = results.get('ceiling')
    if c:
        print(f'ceilings: FP16 matmul {c["fp16_matmul_tflops"]:.0f} TFLOP/s measured (peak used: '
              f'{REPORTED_PEAK_TFLOPS:.0f}), copy {c["copy_gb_s"]:.0f} GB/s; model '
              f'{results["env"]["model_flops_per_image"] / 1e9:.2f} GFLOP/image -> 100% of peak = '
              f'{REPORTED_PEAK_TFLOPS * 1e12 / results["env"]["model_flops_per_image"]:.0f} img/s')


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default='results/inference.json')
    ap.add_argument('--stages', default='ceiling,correctness,naive,ort,torch,e2e,profile')
    ap.add_argument('--batches', type=lambda s: tuple(int(x) for x in s.split(',')), default=DEFAULT_BATCHES)
    ap.add_argument('--ort-batches', type=lambda s: tuple(int(x) for x in s.split(',')), default=(1, 8, 32))
    ap.add_argument('--compile', type=lambda s: tuple(s.split(',')),
                    default=('default:1', 'max-autotune:256'),
                    help='mode:batch pairs for the compile stage')
    ap.add_argument('--iters', type=int, default=200)
    ap.add_argument('--stream-iters', type=int, default=200)
    ap.add_argument('--naive-iters', type=int, default=200)
    ap.add_argument('--full-fp32', action='store_true', help='FP32 rows beyond batch 64 too')
    ap.add_argument('--model-dir', default=None)
    ap.add_argument('--cache-dir', default='')
    args = ap.parse_args(argv)
    bench = Bench(args)
    stages = args.stages.split(',')
    if not bench.cuda:
        print('no CUDA GPU: only the onnxruntime CPU rows run', flush=True)
        stages = [s for s in stages if s == 'ort']
    steps = {'ceiling': bench.ceiling, 'correctness': bench.correctness, 'naive': bench.naive,
             'ort': bench.ort, 'torch': bench.torch_rows, 'e2e': bench.e2e, 'profile': bench.profile,
             'compile': bench.compile_rows}
    for s in stages:
        t0 = time.perf_counter()
        try:
            steps[s]()
        except Exception as e:  # noqa: BLE001 - one failing stage must not lose the others' numbers
            import traceback
            traceback.print_exc()
            bench.results.setdefault('errors', {})[s] = f'{type(e).__name__}: {e}'
        print(f'STAGE {s} took {time.perf_counter() - t0:.1f} s', flush=True)
        bench.save()
    print_table(bench.results)
    print(f'JSON: {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

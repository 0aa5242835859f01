#!/usr/bin/env bash
# Run on the GPU machine (through the device tool), from the repository root, with `.whl` carried:
#   bash scripts/device-check.sh [quick|full] [STEP ...]
# Installs the ROS 2 wheels beside the machine's torch, then runs the GPU tests and the benchmarks.
# Steps run only when named (each takes minutes): tuning_ros (issue 16: qos_tuner, stream_batcher and
# image_source as processes, about 5-6 min on the H200) and launch_pipeline (the pipeline rows, dds and
# zero_copy side by side). tuning_ros profiles stream_batcher with py-spy when `py-spy` is installed: put its
# wheel in .whl too (python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12
# --platform manylinux_2_17_x86_64 -d .whl py-spy).
# Everything lands in $OUT (or ./results when OUT is unset): logs, JSON, PNG, and one tarball.
set -uo pipefail
mode=${1:-full}; shift || true
steps=${*:-"env gputests inference gpu_sampler monitor batching pipeline tuning exercise1 profiler"}
out=${OUT:-results}; mkdir -p "$out/r"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD ROS_DOMAIN_ID=$(( (RANDOM % 100) + 100 ))
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ISAAC_PERF_CACHE=/tmp/isaac_perf_cache
if [ -d .whl ] && ! python3 -c 'import rclpy' 2>/dev/null; then
  # Into python3's own environment: the ROS wheels rely on .pth files, which PYTHONPATH entries skip.
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
fi
quick=(); [ "$mode" = quick ] && quick=(--quick)
summary="$out/summary.txt"; : > "$summary"
step() {  # step NAME CMD...: run one step, keep its log, note its exit status
  local name=$1; shift
  echo "=== $name: $*" | tee -a "$summary"
  local t0=$SECONDS
  "$@" > "$out/r/$name.log" 2>&1; local rc=$?
  tail -n 25 "$out/r/$name.log"
  echo "=== $name exited $rc after $((SECONDS - t0)) s" | tee -a "$summary"
}
for s in $steps; do
  case $s in
    env) step env bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv;
         python3 -c "import torch, rclpy, sys; print(sys.version); print(torch.__version__, torch.cuda.get_device_name())"' ;;
    gputests) step gputests python3 -m pytest -q -m gpu -p no:cacheprovider test ;;
    inference) step inference python3 benchmarks/inference.py "${quick[@]}" --out "$out/r/inference.json" ;;
    gpu_sampler) step gpu_sampler python3 benchmarks/gpu_sampler.py --out "$out/r/gpu_sampler.json" ;;
    monitor) step monitor python3 benchmarks/monitor_overhead.py --out "$out/r/monitor_overhead.json" ;;
    batching) step batching python3 benchmarks/batching.py "${quick[@]}" --out "$out/r/batching.json" ;;
    pipeline) step pipeline python3 benchmarks/pipeline.py "${quick[@]}" --backend torch --fp16 --cuda-graphs --out "$out/r/pipeline.json" ;;
    tuning) step tuning python3 benchmarks/tuning.py "${quick[@]}" --tune-seconds 40 --out "$out/r/tuning.json" \
             --plot "$out/r/tuning_trajectory.png" ;;
    exercise1) step exercise1 python3 benchmarks/exercise1.py "${quick[@]}" --out "$out/r/exercise1.json" --report-dir "$out/r/exercise1" ;;
    profiler) step profiler python3 benchmarks/profiler_overhead.py --out "$out/r/profiler_overhead.json" ;;
    tuning_ros) spy=(); command -v py-spy >/dev/null && spy=(--py-spy 3)
       step tuning_ros python3 benchmarks/tuning_ros.py "${quick[@]}" "${spy[@]}" --out "$out/r/tuning_ros.json" \
             --plot "$out/r/tuning_ros.png" --logs "$out/r/tuning_ros_logs" ;;
    launch_pipeline) step launch_pipeline python3 benchmarks/launch_pipeline.py "${quick[@]}" --sections pipeline \
             --dds profile --transport dds,zero_copy --out "$out/r/launch_pipeline.json" ;;
    *) echo "unknown step $s" | tee -a "$summary" ;;
  esac
done
tar -C "$out" -czf "$out/results.tar.gz" r && rm -rf "$out/r"
cat "$summary"

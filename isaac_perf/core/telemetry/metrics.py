"""The /performance_metrics layout: field names, their order, and flattening into (labels, values).

The message is a std_msgs/Float32MultiArray; `layout.dim[i].label` names `data[i]` (size 1, stride 1), so
`ros2 topic echo /performance_metrics` is readable and consumers look fields up by label, never by index.

Order (stable; new fields are only ever appended to the end of a tuple below):

1. the global fields, `GLOBAL_FIELDS`, labelled by name (e.g. `cpu_percent`);
2. one block per GPU, in index order, labelled `gpu:<index>:<field>` for each of `GPU_FIELDS`;
3. one block per tracked process pattern, labelled `proc:<pattern>:<field>` (`PROCESS_FIELDS`);
4. one block per watched topic, in parameter order, labelled `topic:<topic name>:<field>` (`TOPIC_FIELDS`);
5. one block per stage-time source, sorted by topic name, labelled `stages:<topic name>:<field>`:
   `STAGE_FIELDS`, then `<stage>_ms_mean`, `<stage>_ms_p50`, `<stage>_ms_p99` per stage in the order the
   source reports them, ending with `total`;
6. one block per node of the graph whose process was found, sorted by node name, labelled
   `node:<node name>:<field>` (`NODE_FIELDS`): the GPU use of that node's process.

Units are in the names: `_percent` (0-100), `_mib`, `_mbps` (1e6 bytes per second), `_ms`, `_s`, `_hz`,
`_c` (Celsius), `_w` (watts), `_mhz`. Unknown values are NaN. Float32 carries 24 bits of mantissa, so
counters are exact up to 16,777,216.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from isaac_perf.core.telemetry.gpm import GPM_FIELDS

NAN = float('nan')


class GlobalField(str, Enum):
    """Fields at the start of every /performance_metrics message, in order."""
    CPU_PERCENT = 'cpu_percent'                        # host CPU, all cores
    CPU_MAX_CORE_PERCENT = 'cpu_max_core_percent'      # busiest core
    MEMORY_PERCENT = 'memory_percent'
    MEMORY_USED_MIB = 'memory_used_mib'
    GPU_COUNT = 'gpu_count'                            # GPUs sampled (0 without NVML)
    GPU_UTIL_PERCENT_MAX = 'gpu_util_percent_max'
    GPU_MEMORY_USED_FRACTION_MAX = 'gpu_memory_used_fraction_max'
    GPU_TEMPERATURE_C_MAX = 'gpu_temperature_c_max'
    GPU_POWER_W_TOTAL = 'gpu_power_w_total'
    PIPELINE_FPS = 'pipeline_fps'                      # lowest FPS over stage-time sources
    PIPELINE_LATENCY_MS_P50 = 'pipeline_latency_ms_p50'  # highest p50 over stage-time sources
    PIPELINE_LATENCY_MS_P99 = 'pipeline_latency_ms_p99'  # highest p99 over stage-time sources
    TOPICS_WATCHED = 'topics_watched'
    TOPICS_STALE = 'topics_stale'
    ALERTS_WARN = 'alerts_warn'
    ALERTS_ERROR = 'alerts_error'
    MONITOR_CPU_PERCENT = 'monitor_cpu_percent'        # this monitor process itself (100 = one core)
    GPU_SM_ACTIVE_PERCENT_MAX = 'gpu_sm_active_percent_max'          # GPM, busiest GPU (NaN without GPM)
    GPU_TENSOR_ACTIVE_PERCENT_MAX = 'gpu_tensor_active_percent_max'  # GPM
    PIPELINE_GPU_MEMORY_MIB = 'pipeline_gpu_memory_mib'  # GPU memory of this graph's node processes
    PIPELINE_ENGINE_BATCH_SIZE_MEAN = 'pipeline_engine_batch_size_mean'  # over stage sources reporting it


GLOBAL_FIELDS: tuple[str, ...] = tuple(f.value for f in GlobalField)

GPU_FIELDS: tuple[str, ...] = (
    'util_percent', 'memory_used_mib', 'memory_total_mib', 'memory_used_fraction', 'memory_bw_util_percent',
    'temperature_c', 'power_w', 'power_limit_w', 'sm_clock_mhz', 'mem_clock_mhz', 'throttle_reasons',
    'pcie_rx_mbps', 'pcie_tx_mbps', 'nvlink_rx_mbps', 'nvlink_tx_mbps', 'process_count',
    'process_memory_mib', 'level',
    # NVML GPM (core/telemetry/gpm.py), NaN where unsupported
    *GPM_FIELDS,
    # this graph's node processes on this GPU (core/telemetry/gpu_processes.py)
    'pipeline_process_memory_mib', 'pipeline_process_sm_util_percent',
)

PROCESS_FIELDS: tuple[str, ...] = ('count', 'cpu_percent', 'rss_mib')

TOPIC_FIELDS: tuple[str, ...] = (
    'rate_hz', 'expected_rate_hz', 'stamp_rate_hz', 'bandwidth_mbps', 'mean_size_kib',
    'latency_ms_mean', 'latency_ms_p50', 'latency_ms_p90', 'latency_ms_p99', 'latency_ms_max',
    'jitter_ms', 'max_abs_jitter_ms', 'drops', 'count', 'age_s', 'level',
    # core/telemetry/greenwave.py: what the publishers sent vs what arrived, drops by source
    'publisher_rate_hz', 'received_rate_hz', 'transport_loss_percent', 'drops_sequence', 'drops_stamp_gap',
    'messages_lost', 'watch_reliable',
    # greenwave_monitor's definitions (its keys in /diagnostics)
    'frame_rate_node_hz', 'frame_rate_msg_hz', 'current_delay_ms', 'mean_abs_jitter_node_us',
    'max_abs_jitter_node_us', 'mean_abs_jitter_msg_us', 'max_abs_jitter_msg_us', 'jitter_outliers_msg',
)

STAGE_FIELDS: tuple[str, ...] = (
    'fps', 'reports', 'batch_size_mean', 'latency_ms_mean', 'latency_ms_p50', 'latency_ms_p90',
    'latency_ms_p99', 'latency_ms_max', 'age_s', 'level',
    'engine_batch_size_mean', 'engine_batch_size_max',   # stream_batcher's GPU batch per frame
)

NODE_FIELDS: tuple[str, ...] = ('pid', 'gpu_memory_mib', 'gpu_sm_util_percent', 'gpu_count')

STAGE_STAT_SUFFIXES: tuple[str, ...] = ('mean', 'p50', 'p99')

BLOCK_FIELDS: dict[str, tuple[str, ...]] = {
    'gpu': GPU_FIELDS, 'proc': PROCESS_FIELDS, 'topic': TOPIC_FIELDS, 'stages': STAGE_FIELDS,
    'node': NODE_FIELDS,
}


@dataclass
class Block:
    """One labelled group of fields: `kind` is gpu/proc/topic/stages, `key` its GPU index or name."""
    kind: str
    key: str
    values: Mapping[str, float]
    extra: Sequence[str] = ()   # fields after the fixed ones (stage statistics), in this order


def label(kind: str, key: str, name: str) -> str:
    return f'{kind}:{key}:{name}'


def flatten(global_values: Mapping[str, float], blocks: Iterable[Block]) -> tuple[list[str], list[float]]:
    """Labels and values in the documented order; a field missing from a mapping is NaN."""
    labels = list(GLOBAL_FIELDS)
    values = [_number(global_values.get(name, NAN)) for name in GLOBAL_FIELDS]
    for block in blocks:
        fields = BLOCK_FIELDS[block.kind] + tuple(block.extra)
        for name in fields:
            labels.append(label(block.kind, block.key, name))
            values.append(_number(block.values.get(name, NAN)))
    return labels, values


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return NAN


def stage_extra_fields(stage_names: Iterable[str]) -> list[str]:
    return [f'{stage}_ms_{stat}' for stage in stage_names for stat in STAGE_STAT_SUFFIXES]


def parse(labels: Sequence[str], values: Sequence[float]) -> dict:
    """Inverse of `flatten` for consumers (tuner, CLI): {'global': {...}, 'gpu': {'0': {...}}, ...}."""
    if len(labels) != len(values):
        raise ValueError(f'/performance_metrics has {len(labels)} labels but {len(values)} values')
    result: dict = {'global': {}, **{kind: {} for kind in BLOCK_FIELDS}}
    for name, value in zip(labels, values, strict=True):
        kind, _, rest = name.partition(':')
        key, _, field = rest.rpartition(':')   # keys may hold ':' (e.g. 'pid:42'); field names never do
        if not rest:
            result['global'][name] = float(value)
        elif kind in BLOCK_FIELDS and key and field:
            result[kind].setdefault(key, {})[field] = float(value)
        else:
            # Labels from a newer layout this code does not know: keep them rather than fail.
            result.setdefault('other', {})[name] = float(value)
    return result


def finite_or(value: float, default: float) -> float:
    return value if value is not None and math.isfinite(value) else default

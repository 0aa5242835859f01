"""Snapshots as named fields: the one mapping from GPU/host/topic/stage samples to what is published.

Each subject has two views: its `/performance_metrics` block (`*_metrics`: numbers only, in the documented
field order of docs/monitor.md, append never reorder) and its `/diagnostics` key/values (`*_diagnostics`:
greenwave_monitor's keys first for topics, text allowed). Both live here so a field is named in one place.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from isaac_perf.core.telemetry.alerts import Level
from isaac_perf.core.telemetry.gpm import GPM_FIELDS, GpmSample, headroom_notes
from isaac_perf.core.telemetry.gpu import GpuSample
from isaac_perf.core.telemetry.gpu_processes import NodeGpuUse
from isaac_perf.core.telemetry.greenwave import GreenwaveSnapshot, greenwave_values, transport_values
from isaac_perf.core.telemetry.stats import StageSnapshot, StreamSnapshot
from isaac_perf.core.telemetry.system import SystemSample

NAN = float('nan')


def fmt(value: float, digits: int = 3) -> str:
    """A number as diagnostics text: fixed decimals, 'N/A' for NaN/inf."""
    if value is None or isinstance(value, float) and not math.isfinite(value):
        return 'N/A'
    if isinstance(value, int):
        return str(value)
    return f'{value:.{digits}f}'


def nanmax(values: Iterable[float | None]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return max(finite) if finite else NAN


def nanmin(values: Iterable[float | None]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return min(finite) if finite else NAN


def _nanmean(values: Iterable[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return math.fsum(finite) / len(finite) if finite else NAN


def _nansum(values: Iterable[float]) -> float:
    return math.fsum(v for v in values if not math.isnan(v))


# ------------------------------------------------------------------------------------------------ GPU

def gpu_metrics(g: GpuSample, level: Level, gpm: GpmSample | None = None,
                pipeline: Iterable[NodeGpuUse] = ()) -> dict[str, float]:
    """The GPU block; `gpm` its GPM sample (NaN fields without), `pipeline` this graph's node processes."""
    mine = [u for u in pipeline if g.index in u.gpus]
    return {
        'util_percent': g.util_percent, 'memory_used_mib': g.memory_used_mib,
        'memory_total_mib': g.memory_total_mib, 'memory_used_fraction': g.memory_used_fraction,
        'memory_bw_util_percent': g.memory_bw_util_percent, 'temperature_c': g.temperature_c,
        'power_w': g.power_w, 'power_limit_w': g.power_limit_w, 'sm_clock_mhz': g.sm_clock_mhz,
        'mem_clock_mhz': g.mem_clock_mhz, 'throttle_reasons': g.throttle_reasons,
        'pcie_rx_mbps': g.pcie_rx_mbps, 'pcie_tx_mbps': g.pcie_tx_mbps,
        'nvlink_rx_mbps': g.nvlink_rx_mbps, 'nvlink_tx_mbps': g.nvlink_tx_mbps,
        'process_count': len(g.processes_mib),
        'process_memory_mib': _nansum(g.processes_mib.values()),
        'level': int(level),
        **{name: gpm.get(name) if gpm is not None else NAN for name in GPM_FIELDS},
        'pipeline_process_memory_mib':
            _nansum(g.processes_mib.get(u.pid, NAN) for u in mine) if mine else NAN,
        'pipeline_process_sm_util_percent': _nansum(u.sm_util_percent for u in mine) if mine else NAN}


def gpu_diagnostics(sample: GpuSample, gpm: GpmSample | None = None) -> dict[str, object]:
    values: dict[str, object] = {
        'name': sample.name or 'N/A',
        'uuid': sample.uuid or 'N/A',
        'utilization_percent': sample.util_percent,
        'memory_used_mib': sample.memory_used_mib,
        'memory_total_mib': sample.memory_total_mib,
        'memory_bandwidth_utilization_percent': sample.memory_bw_util_percent,
        'temperature_c': sample.temperature_c,
        'power_w': sample.power_w,
        'power_limit_w': sample.power_limit_w,
        'sm_clock_mhz': sample.sm_clock_mhz,
        'memory_clock_mhz': sample.mem_clock_mhz,
        'throttle_reasons': ', '.join(sample.throttle_reason_names) or
                            ('N/A' if math.isnan(sample.throttle_reasons) else 'none'),
        'pcie_rx_mbps': sample.pcie_rx_mbps,
        'pcie_tx_mbps': sample.pcie_tx_mbps,
        'nvlink_links': sample.nvlink_links,
        'nvlink_rx_mbps': sample.nvlink_rx_mbps,
        'nvlink_tx_mbps': sample.nvlink_tx_mbps,
        'processes': ' '.join(f'{pid}:{fmt(mib, 0)}MiB' for pid, mib in sorted(sample.processes_mib.items()))
                     or 'none',
    }
    # GPM: what the SMs did, beside NVML's coarse "a kernel was running" utilization
    values.update({name: gpm.get(name) if gpm is not None else NAN for name in GPM_FIELDS})
    values['gpm_supported'] = 'yes' if gpm is not None and gpm.supported else 'no'
    notes = headroom_notes(sample.util_percent, gpm)
    if notes:
        values['headroom'] = ' | '.join(notes)
    return values


# ----------------------------------------------------------------------------------------------- host

def host_diagnostics(sample: SystemSample) -> dict[str, object]:
    values: dict[str, object] = {
        'cpu_percent': sample.cpu_percent,
        'cpu_max_core_percent': sample.cpu_max_core_percent,
        'cpu_per_core_percent': ' '.join(fmt(v, 0) for v in sample.per_core_percent),
        'memory_percent': sample.memory_percent,
        'memory_used_mib': sample.memory_used_mib,
        'memory_total_mib': sample.memory_total_mib,
        'load_1m': sample.load_1m,
    }
    for pattern, group in sample.processes.items():
        values[f'process[{pattern}].count'] = group.count
        values[f'process[{pattern}].cpu_percent'] = group.cpu_percent
        values[f'process[{pattern}].rss_mib'] = group.rss_mib
    return values


def process_metrics(sample: SystemSample) -> dict[str, dict[str, float]]:
    """pattern -> its `proc` block."""
    return {pattern: {'count': g.count, 'cpu_percent': g.cpu_percent, 'rss_mib': g.rss_mib}
            for pattern, g in sample.processes.items()}


# ---------------------------------------------------------------------------------------------- topics

def topic_metrics(snap: StreamSnapshot, level: Level, gw: GreenwaveSnapshot | None = None,
                  reliable: bool | None = None) -> dict[str, float]:
    """The topic block; `gw` adds publisher/received rates, drops by source and greenwave's fields."""
    extra: dict[str, float] = {}
    if gw is not None:
        extra = {
            'publisher_rate_hz': gw.publisher_rate_hz, 'received_rate_hz': gw.received_rate_hz,
            'transport_loss_percent': gw.transport_loss_fraction * 100.0,
            'drops_sequence': gw.drops_sequence, 'drops_stamp_gap': gw.drops_stamp_gap,
            'messages_lost': gw.messages_lost,
            'watch_reliable': NAN if reliable is None else float(reliable),
            'frame_rate_node_hz': gw.frame_rate_node_hz, 'frame_rate_msg_hz': gw.frame_rate_msg_hz,
            'current_delay_ms': gw.current_delay_ms,
            'mean_abs_jitter_node_us': gw.mean_abs_jitter_node_us,
            'max_abs_jitter_node_us': gw.max_abs_jitter_node_us,
            'mean_abs_jitter_msg_us': gw.mean_abs_jitter_msg_us,
            'max_abs_jitter_msg_us': gw.max_abs_jitter_msg_us,
            'jitter_outliers_msg': gw.num_jitter_outliers_msg,
            'drops': gw.drops}
    return {
        'rate_hz': snap.rate_hz, 'expected_rate_hz': snap.expected_rate_hz,
        'stamp_rate_hz': snap.stamp_rate_hz, 'bandwidth_mbps': snap.bandwidth_bps / 1e6,
        'mean_size_kib': snap.mean_size_bytes / 1024.0,
        'latency_ms_mean': snap.latency_ms.mean, 'latency_ms_p50': snap.latency_ms.p50,
        'latency_ms_p90': snap.latency_ms.p90, 'latency_ms_p99': snap.latency_ms.p99,
        'latency_ms_max': snap.latency_ms.max, 'jitter_ms': snap.jitter_ms,
        'max_abs_jitter_ms': snap.max_abs_jitter_ms, 'drops': snap.drops, 'count': snap.count,
        'age_s': snap.age_s, 'level': int(level), **extra}


def topic_diagnostics(snap: StreamSnapshot, tolerance_percent: float, type_name: str | None,
                      publishers: int, gw: GreenwaveSnapshot | None = None,
                      watch_qos: str = '') -> dict[str, object]:
    """greenwave_monitor's keys first, then ours.

    With `gw` (the monitor), greenwave's keys carry greenwave's own definitions (core/telemetry/greenwave.py):
    mean/max abs jitter against the expected period, `total_dropped_frames` its message-time outlier count;
    the lost-message counts follow under our names (`drops`, `drops_source`, `drops_sequence`, ...), beside
    `publisher_rate_hz` (sequence numbers), `received_rate_hz` and `transport_loss_percent`.
    """
    if gw is not None:
        return {**greenwave_values(gw), **transport_values(gw), **_topic_extras(snap, type_name, publishers),
                'watch_qos': watch_qos or 'N/A'}
    has_stamps = not math.isnan(snap.stamp_rate_hz)
    expected = snap.expected_rate_hz
    return {
        'frame_rate_node': snap.rate_hz,
        'frame_rate_msg': snap.stamp_rate_hz if has_stamps else snap.rate_hz,
        'current_delay_from_realtime_ms': snap.last_latency_ms,
        'total_dropped_frames': int(snap.drops),
        'expected_frequency': expected if expected > 0 else 'N/A',
        'tolerance': tolerance_percent if expected > 0 else 'N/A',
        # microseconds, as greenwave_monitor reports them
        'mean_abs_jitter_node': snap.interval_ms.std * 1000.0,
        'max_abs_jitter_node': snap.max_abs_jitter_ms * 1000.0,
        **_topic_extras(snap, type_name, publishers)}


def _topic_extras(snap: StreamSnapshot, type_name: str | None, publishers: int) -> dict[str, object]:
    return {
        'message_type': type_name or 'unknown (not in the graph yet)',
        'message_count': int(snap.count),
        'bandwidth_mbps': snap.bandwidth_bps / 1e6,
        'mean_size_bytes': snap.mean_size_bytes,
        'latency_ms_p50': snap.latency_ms.p50,
        'latency_ms_p90': snap.latency_ms.p90,
        'latency_ms_p99': snap.latency_ms.p99,
        'latency_ms_max': snap.latency_ms.max,
        'jitter_ms': snap.jitter_ms,
        'seconds_since_last_message': snap.age_s,
        'publishers': publishers,
        **snap.bad_stamps,
        'sequence_resets': int(snap.sequence_resets),
    }


def stamp_level(level: Level, message: str, snap: StreamSnapshot | StageSnapshot) -> tuple[Level, str]:
    """Raise an OK level to WARN while unusable header stamps persist (they never reach latency)."""
    if snap.stamp_level != 'warn' or level >= Level.WARN:
        return level, message
    counts = ', '.join(f'{k[len("bad_stamp_"):]} {v}' for k, v in snap.bad_stamps.items() if v)
    return Level.WARN, (f'header stamps unusable ({counts}): kept out of latency; check that the publisher '
                        'stamps from a clock in sync with this host')


# --------------------------------------------------------------------------------------- stage times

def _stage_summaries(snap: StageSnapshot) -> dict[str, float]:
    out: dict[str, float] = {}
    for stage, summary in snap.stages_ms.items():
        out[f'{stage}_ms_mean'] = summary.mean
        out[f'{stage}_ms_p50'] = summary.p50
        out[f'{stage}_ms_p99'] = summary.p99
    return out


def stage_metrics(snap: StageSnapshot, level: Level) -> dict[str, float]:
    return {
        'fps': snap.fps, 'reports': snap.reports, 'batch_size_mean': snap.batch_size.mean,
        'latency_ms_mean': snap.latency_ms.mean, 'latency_ms_p50': snap.latency_ms.p50,
        'latency_ms_p90': snap.latency_ms.p90, 'latency_ms_p99': snap.latency_ms.p99,
        'latency_ms_max': snap.latency_ms.max, 'age_s': snap.age_s, 'level': int(level),
        'engine_batch_size_mean': snap.engine_batch_size.mean,
        'engine_batch_size_max': snap.engine_batch_size.max,
        **_stage_summaries(snap)}


def stage_diagnostics(snap: StageSnapshot) -> dict[str, object]:
    return {
        'frame_rate_msg': snap.fps,
        'current_delay_from_realtime_ms': snap.latency_ms.p50,
        'reports': int(snap.reports),
        'frames': int(snap.frames),
        'malformed_reports': int(snap.malformed),
        'batch_size_mean': snap.batch_size.mean,
        'engine_batch_size_mean': snap.engine_batch_size.mean,
        'engine_batch_size_max': snap.engine_batch_size.max,
        'latency_ms_mean': snap.latency_ms.mean,
        'latency_ms_p50': snap.latency_ms.p50,
        'latency_ms_p99': snap.latency_ms.p99,
        'seconds_since_last_report': snap.age_s,
        **snap.bad_stamps,
        **_stage_summaries(snap),
    }


# --------------------------------------------------------------------------------------------- global

def global_metrics(system: SystemSample | None, gpus: Iterable[GpuSample],
                   live_stages: Iterable[StageSnapshot], counts: Mapping[str, float],
                   gpm: Iterable[GpmSample] = (), pipeline: Iterable[NodeGpuUse] = ()) -> dict[str, float]:
    """The global fields, in the documented order; `live_stages` are the non-STALE stage sources and
    `counts` carries topics_watched, topics_stale, alerts_warn, alerts_error and monitor_cpu_percent."""
    ok_gpus = [g for g in gpus if g.ok]
    stages = list(live_stages)
    gpm = list(gpm)
    pipeline = list(pipeline)
    return {
        'cpu_percent': system.cpu_percent if system else NAN,
        'cpu_max_core_percent': system.cpu_max_core_percent if system else NAN,
        'memory_percent': system.memory_percent if system else NAN,
        'memory_used_mib': system.memory_used_mib if system else NAN,
        'gpu_count': len(ok_gpus),
        'gpu_util_percent_max': nanmax(g.util_percent for g in ok_gpus),
        'gpu_memory_used_fraction_max': nanmax(g.memory_used_fraction for g in ok_gpus),
        'gpu_temperature_c_max': nanmax(g.temperature_c for g in ok_gpus),
        'gpu_power_w_total': _nansum(g.power_w for g in ok_gpus) if ok_gpus else NAN,
        # The pipeline runs at its slowest stage source and is as late as its latest.
        'pipeline_fps': nanmin(s.fps for s in stages),
        'pipeline_latency_ms_p50': nanmax(s.latency_ms.p50 for s in stages),
        'pipeline_latency_ms_p99': nanmax(s.latency_ms.p99 for s in stages),
        'topics_watched': counts['topics_watched'],
        'topics_stale': counts['topics_stale'],
        'alerts_warn': counts['alerts_warn'],
        'alerts_error': counts['alerts_error'],
        'monitor_cpu_percent': counts['monitor_cpu_percent'],
        'gpu_sm_active_percent_max': nanmax(s.get('sm_active_percent') for s in gpm),
        'gpu_tensor_active_percent_max': nanmax(s.get('tensor_active_percent') for s in gpm),
        'pipeline_gpu_memory_mib': _nansum(u.memory_mib for u in pipeline) if pipeline else NAN,
        'pipeline_engine_batch_size_mean': _nanmean(s.engine_batch_size.mean for s in stages),
    }


def node_metrics(use: NodeGpuUse) -> dict[str, float]:
    """The `node` block: GPU use of one node's process."""
    return {'pid': use.pid, 'gpu_memory_mib': use.memory_mib, 'gpu_sm_util_percent': use.sm_util_percent,
            'gpu_count': len(use.gpus)}

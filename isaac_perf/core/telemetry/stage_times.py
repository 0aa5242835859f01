"""The stage-timing report: how any node tells the monitor where one frame's time went.

Wire format (std_msgs/Float64MultiArray, one message per frame or per batch), published on a topic whose
name ends in `stage_times` (by convention `~/stage_times` of the reporting node). The monitor finds such
topics by that suffix and aggregates them per publishing topic.

    layout.dim[i].label : field name, layout.dim[i].size = 1
    data[i]             : field value

Fields, in this order: `stamp_sec`, `stamp_nanosec` (the frame's header stamp, 0/0 if unknown),
`batch_size`, then one `<stage>_ms` per stage (e.g. `pre_ms`, `infer_ms`, `post_ms`), and `total_ms`;
then any extra numbers a reporter adds, each labelled (names not ending in `_ms`), e.g. stream_batcher's
`engine_batch_size` (frames in the GPU batch the frame ran in), which the monitor aggregates.
The stamp is split because a float64 cannot hold epoch nanoseconds exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

STAMP_FIELDS = ('stamp_sec', 'stamp_nanosec', 'batch_size')
SUFFIX = 'stage_times'


@dataclass
class StageReport:
    stamp_ns: int
    batch_size: int
    stages_ms: dict[str, float] = field(default_factory=dict)
    extras: dict[str, float] = field(default_factory=dict)     # labelled extra fields, e.g. engine_batch_size

    @property
    def total_ms(self) -> float:
        return float(sum(self.stages_ms.values()))


def encode(report: StageReport) -> tuple[list[str], list[float]]:
    """Labels and values for a Float64MultiArray."""
    labels = list(STAMP_FIELDS) + [f'{name}_ms' for name in report.stages_ms] + ['total_ms']
    sec, nsec = divmod(int(report.stamp_ns), 1_000_000_000)
    values = [float(sec), float(nsec), float(report.batch_size)]
    values += [float(v) for v in report.stages_ms.values()] + [report.total_ms]
    labels += list(report.extras)
    values += [float(v) for v in report.extras.values()]
    return labels, values


def decode(labels: list[str], values: list[float]) -> StageReport:
    """Inverse of `encode`; raises ValueError with what is wrong for malformed reports."""
    if len(labels) != len(values):
        raise ValueError(f'stage report has {len(labels)} labels but {len(values)} values')
    fields = dict(zip(labels, values, strict=True))
    missing = [f for f in STAMP_FIELDS if f not in fields]
    if missing:
        raise ValueError(f'stage report lacks {", ".join(missing)}')
    stages = {k[:-3]: float(v) for k, v in fields.items() if k.endswith('_ms') and k != 'total_ms'}
    extras = {k: float(v) for k, v in fields.items() if not k.endswith('_ms') and k not in STAMP_FIELDS}
    stamp_ns = int(fields['stamp_sec']) * 1_000_000_000 + int(fields['stamp_nanosec'])
    return StageReport(stamp_ns=stamp_ns, batch_size=int(fields['batch_size']), stages_ms=stages,
                       extras=extras)

"""Which GPUs a batcher may use, the engine placed on each, and the batch limit of each.

`gpu_ids` and `max_batch_size_per_gpu` are validated here; `plan_placement` turns `device` + `gpu_ids` +
the visible GPUs into the devices engines are created on (`Placement`), so the node only builds them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# -------------------------------------------------------------------------------------- several devices


def gpu_ids_errors(gpu_ids: Sequence[int], visible: Sequence[str]) -> list[str]:
    """What is wrong with a `gpu_ids` list given the GPUs this process sees (empty when it is fine).

    [] or [-1] means every visible GPU. An index past the visible GPUs is an error naming them; without any
    visible GPU an explicit list is not an error (the caller runs on the CPU and warns, the way a node
    configured for a GPU keeps running on a machine without one).
    """
    ids = [int(i) for i in gpu_ids]
    if not ids or ids == [-1]:
        return []
    errors = []
    bad = [i for i in ids if i < 0]
    if bad:
        errors.append(f'gpu_ids {ids}: {bad} are not GPU indices; list indices >= 0, or [-1] alone for '
                      'every visible GPU')
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        errors.append(f'gpu_ids {ids}: GPU {dups} listed twice; list each GPU once')
    if visible:
        missing = [i for i in ids if i >= len(visible)]
        if missing:
            names = ', '.join(f'{i} ({name})' for i, name in enumerate(visible))
            errors.append(f'gpu_ids {ids}: GPU {", ".join(map(str, missing))} does not exist; visible '
                          f'GPUs: {names}')
    return errors


def resolve_gpu_ids(gpu_ids: Sequence[int], visible: Sequence[str]) -> list[int]:
    """The GPU indices to use, in routing order; [] means "no GPU: one CPU device".

    Raises ValueError with `gpu_ids_errors`' messages for a list that cannot be used.
    """
    errors = gpu_ids_errors(gpu_ids, visible)
    if errors:
        raise ValueError('; '.join(errors))
    if not visible:
        return []
    ids = [int(i) for i in gpu_ids]
    return list(range(len(visible))) if not ids or ids == [-1] else ids


def batch_limit_errors(per_gpu: Sequence[int], num_devices: int) -> list[str]:
    """`max_batch_size_per_gpu` rules: [] / [0] = max_batch_size everywhere, one entry = the same limit on
    every GPU, else one entry per GPU in `gpu_ids` order; 0 = max_batch_size; each 0..256."""
    values = [int(v) for v in per_gpu]
    errors = []
    bad = [v for v in values if not 0 <= v <= 256]
    if bad:
        errors.append(f'max_batch_size_per_gpu {values}: entries {bad} are outside 0..256 '
                      '(0 = max_batch_size)')
    if len(values) > 1 and len(values) != num_devices:
        errors.append(f'max_batch_size_per_gpu has {len(values)} entries for {num_devices} device(s): give '
                      'one per GPU in gpu_ids order, or one for all')
    return errors


def batch_limits(per_gpu: Sequence[int], num_devices: int) -> list[int | None]:
    """One batch limit per device, None where the entry is 0 (the batcher's max_batch_size, which a limit
    above it cannot raise either); raises ValueError when the list is wrong (`batch_limit_errors`)."""
    errors = batch_limit_errors(per_gpu, num_devices)
    if errors:
        raise ValueError('; '.join(errors))
    values = [int(v) for v in per_gpu] or [0]
    if len(values) == 1:
        values = values * num_devices
    return [v or None for v in values]


# ------------------------------------------------------------------------------------------- placement


def gpu_plan(device: str, gpu_ids: Sequence[int], visible: Sequence[str]) -> list[int]:
    """The GPU indices the engines go to ([] = one device chosen by `device` alone, as a single engine).

    device 'cpu' (or no visible GPU) -> []; 'cuda:N' -> [N]; 'auto' / 'cuda' -> gpu_ids resolved against
    the visible GPUs (raises ValueError naming them for an index that does not exist).
    """
    if device == 'cpu' or not visible:
        return []
    if device.startswith('cuda:'):
        return [int(device[5:])]
    return resolve_gpu_ids(list(gpu_ids), visible)


@dataclass(frozen=True)
class Placement:
    """Where a batcher's engines go: one `targets` entry per engine device, in routing order."""
    gpus: list[int]      # the CUDA indices in use ([] = no GPU placement: `device` decides alone)
    targets: list[str]   # the `device` each engine is created with
    warning: str = ''    # a request that cannot be honoured here (gpu_ids without a GPU), for the log


def _explicit(gpu_ids: Sequence[int]) -> list[int]:
    ids = [int(i) for i in gpu_ids]
    return ids if ids and ids != [-1] else []


def plan_placement(device: str, gpu_ids: Sequence[int], visible: Sequence[str]) -> Placement:
    """The engines to create: one per GPU of `gpu_plan`, or a single one given `device` itself.

    A single engine on GPU 0 (or on the one GPU `cuda:N` names) keeps `device` as written, so the
    single-GPU set-up is what it would be without placement. Raises ValueError for gpu_ids that do not
    exist here.
    """
    gpus = gpu_plan(device, gpu_ids, visible)
    ids = _explicit(gpu_ids)
    warning = ''
    if not gpus and device != 'cpu' and ids:
        warning = f'gpu_ids={ids} but no CUDA GPU is visible here: running on {device} (CPU fallback)'
    single = len(gpus) <= 1 and (not gpus or gpus == [0] or device.startswith('cuda:'))
    targets = [device] if single else [f'cuda:{g}' for g in gpus]
    return Placement(gpus, targets, warning)


def placement_errors(device: str, gpu_ids: Sequence[int], per_gpu: Sequence[int],
                     visible: Sequence[str]) -> list[str]:
    """What is wrong with `device`, `gpu_ids` and `max_batch_size_per_gpu` together; messages say what to
    change."""
    ids = _explicit(gpu_ids)
    errors = []
    if device.startswith('cuda:') and ids:
        errors.append(f'device={device} names one GPU but gpu_ids={ids}: set device to cuda (or auto) to use '
                      'gpu_ids, or gpu_ids to [-1]')
    elif device != 'cpu' and ids:
        errors += gpu_ids_errors(ids, visible)
    if device != 'cpu':
        try:
            n = len(gpu_plan(device, gpu_ids, visible)) or 1
        except ValueError:
            n = 1  # reported above
        errors += batch_limit_errors(list(per_gpu), n)
    return errors


def device_limits(per_gpu: Sequence[int], num_devices: int) -> list[int | None]:
    """`batch_limits`, or no limit anywhere when the list does not fit the devices actually built (an
    engine that fell back to one CPU device where several GPUs were asked for)."""
    if len(per_gpu) in (0, 1, num_devices):
        return batch_limits(per_gpu, num_devices)
    return [None] * num_devices


def graph_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Batch sizes engines are warmed (and CUDA graphs captured) at: powers of two up to max_batch_size,
    and max_batch_size itself."""
    return tuple(sorted({min(1 << i, max_batch_size) for i in range(9)}))

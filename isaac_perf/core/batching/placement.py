"""Which GPUs a batcher may use and the batch limit of each: validation of `gpu_ids` and per-GPU limits.
"""
from __future__ import annotations

from collections.abc import Sequence

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

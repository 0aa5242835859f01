"""How inference_node forms its batches: the sizes it warms up, and a fair merge of its input queues.

Pure functions, so the order frames are taken in and the sizes an engine is prepared for are testable
with exact numbers, without a node or an engine.
"""
from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar('T')


def warmup_batch_sizes(max_batch: int, on_gpu: bool, static_batch: int = 0) -> tuple[int, ...]:
    """The batch sizes to run once at load so no frame pays a first-run cost.

    A model with a fixed batch dimension runs that size only. On a GPU every size the worker can form
    (1..max_batch) gets its own CUDA graph / kernel choice, so all are warmed; on the CPU the smallest
    and largest suffice.
    """
    if static_batch:
        return (static_batch,)
    if on_gpu:
        return tuple(range(1, max_batch + 1))
    return tuple(sorted({1, max_batch}))


def take_oldest_first(queues: Sequence[deque[T]], limit: int, arrival: Callable[[T], int]) -> list[T]:
    """Pop up to `limit` items across `queues`, oldest `arrival` first (ties: the lower queue index).

    Each queue is oldest-first already, so only the heads compete: a busy topic cannot starve a quiet
    one, and every frame leaves in the order it arrived overall.
    """
    heads = [(arrival(q[0]), i) for i, q in enumerate(queues) if q]
    heapq.heapify(heads)
    taken: list[T] = []
    while heads and len(taken) < limit:
        _, i = heapq.heappop(heads)
        taken.append(queues[i].popleft())
        if queues[i]:
            heapq.heappush(heads, (arrival(queues[i][0]), i))
    return taken

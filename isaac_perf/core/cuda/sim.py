"""A simulated CUDA runtime with a virtual clock, for testing stream overlap and scheduling exactly on a CPU.
"""
from __future__ import annotations

from isaac_perf.core.cuda.base import CpuRuntime, CudaError, Event, Stream

# -------------------------------------------------------------------------------- simulated device


class SimClock:
    """Virtual time for `SimRuntime`: tests advance it explicitly, so device timings are exact numbers."""

    def __init__(self, now_ns: int = 0) -> None:
        self.now_ns = int(now_ns)

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, ns: int) -> None:
        self.now_ns += int(ns)

    def advance_to(self, t_ns: int) -> None:
        self.now_ns = max(self.now_ns, int(t_ns))


class SimEvent(Event):
    """Passes when the virtual clock reaches the end of the work enqueued before it."""

    def __init__(self, clock: SimClock) -> None:
        self._clock = clock
        self.t_ns: int | None = None

    def record(self, stream: Stream | None = None) -> SimEvent:
        self.t_ns = stream.tail_ns() if isinstance(stream, SimStream) else self._clock.now_ns
        return self

    def query(self) -> bool:
        return self.t_ns is not None and self._clock.now_ns >= self.t_ns

    def synchronize(self) -> None:
        if self.t_ns is not None:
            self._clock.advance_to(self.t_ns)  # the host "waits": virtual time moves to the event

    def elapsed_ms(self, end: Event) -> float:
        if self.t_ns is None or getattr(end, 't_ns', None) is None:
            raise CudaError('elapsed_ms on an event that was never recorded')
        return (end.t_ns - self.t_ns) / 1e6  # type: ignore[attr-defined]


class SimStream(Stream):
    """A stream whose work takes virtual time: `busy(ns)` enqueues `ns` of work after what is queued."""

    def __init__(self, clock: SimClock, index: int) -> None:
        self._clock = clock
        self.index = index
        self._tail_ns = 0

    def tail_ns(self) -> int:
        return max(self._tail_ns, self._clock.now_ns)

    def busy(self, ns: int) -> None:
        self._tail_ns = self.tail_ns() + int(ns)

    def record(self, event: Event | None = None) -> Event:
        return (event or SimEvent(self._clock)).record(self)

    def wait(self, event: Event) -> None:
        t = getattr(event, 't_ns', None)
        if t is not None:
            self._tail_ns = max(self.tail_ns(), t)

    def query(self) -> bool:
        return self._clock.now_ns >= self._tail_ns

    def synchronize(self) -> None:
        self._clock.advance_to(self._tail_ns)


class SimRuntime(CpuRuntime):
    """A simulated device for CPU tests of multi-device routing: host memory and numpy results like
    `CpuRuntime`, but work takes virtual time (a compute function calls `stream.busy(ns)`) and events pass
    only when the shared `SimClock` reaches them, so batches really are "in flight" and load-based routing
    can be checked with exact numbers. Several SimRuntimes sharing one clock are several devices."""

    name = 'sim'

    def __init__(self, clock: SimClock, device_index: int = 0) -> None:
        super().__init__()
        self.clock = clock
        self.device_index = device_index

    def new_stream(self) -> Stream:
        self._streams += 1
        return SimStream(self.clock, self._streams - 1)

    def new_event(self, timing: bool = True) -> Event:
        return SimEvent(self.clock)

    def synchronize(self) -> None:
        return None

    def describe(self) -> str:
        return f'simulated device {self.device_index}'

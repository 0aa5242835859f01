"""Where segments live, what they are called, and whether their owner is still alive.

Why this is careful: /dev/shm is shared by every process (and, with `--ipc=host`, every container) on a
machine, and a tmpfs file outlives the process that made it. A publisher that crashed leaves its segment
behind, eating RAM, until someone removes it. `clean_stale_segments` removes exactly those: an owner is
dead when its pid is gone or now belongs to a process started at another time (pid reuse; the start time
is field 22 of /proc/<pid>/stat), and no process holds the segment's liveness lock (a publisher holds it
for its whole life; the kernel drops it when the publisher dies, which also covers pid namespaces where
the owner's pid means nothing here).
"""
from __future__ import annotations

import os
import re
import sys
import time

from isaac_perf.core.transport import locks
from isaac_perf.core.transport.errors import TransportUnavailable

ROOT_ENV = 'ISAAC_PERF_SHM_DIR'
DEFAULT_ROOT = '/dev/shm'
PREFIX = 'isaac_perf.'
FOREIGN_GRACE_S = 60.0  # an unreadable isaac_perf.* file younger than this may be a segment being created
_UNSAFE = re.compile(r'[^A-Za-z0-9_-]+')


def transport_root(root: str | None = None) -> str:
    """The folder segments live in; TransportUnavailable where the transport cannot run (not Linux: no OFD
    locks), so callers fall back to plain messages instead of failing on the first lock."""
    if not sys.platform.startswith('linux'):
        raise TransportUnavailable(f'the zero-copy transport needs Linux (open-file-description locks); '
                                   f'this is {sys.platform}: frames go as plain messages')
    return root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT


def sanitize_topic(topic: str) -> str:
    """'/camera_0/image_raw' -> 'camera_0_image_raw' (file-name safe, at most 120 characters)."""
    return _UNSAFE.sub('_', topic).strip('_')[:120] or 'topic'


def segment_name(pid: int, topic: str, index: int) -> str:
    return f'{PREFIX}{pid}.{sanitize_topic(topic)}.{index}'


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), or None when the process is gone/a zombie."""
    try:
        with open(f'/proc/{pid}/stat', 'rb') as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b')') + 2:].split()  # fields from 3 (state) on; comm may hold spaces
    if len(fields) < 20 or fields[0] in (b'Z', b'X'):
        return None  # a zombie has closed its files: its segments are as dead as its locks
    return int(fields[19])


def owner_alive(pid: int, start_time: int) -> bool:
    return pid > 0 and process_start_time(pid) == start_time


def clean_stale_segments(root: str | None = None) -> list[str]:
    """Unlink segments whose owner is dead (and unreadable isaac_perf.* files older than a minute).

    Returns the names removed, for the caller to log.
    """
    from isaac_perf.core.transport.slots import read_layout  # slots imports this module

    folder = transport_root(root)
    removed = []
    try:
        names = [n for n in os.listdir(folder) if n.startswith(PREFIX)]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # a symlink, another user's file, already gone
        try:
            st = os.fstat(fd)
            layout = read_layout(fd, st.st_size)
            if layout is None:
                stale = time.time() - st.st_mtime > FOREIGN_GRACE_S
            else:
                stale = (not owner_alive(layout.owner_pid, layout.owner_start)
                         and locks.try_lock(fd, layout.liveness_offset, write=False))
        finally:
            os.close(fd)  # also drops the probe lock
        if stale:
            try:
                os.unlink(path)
                removed.append(name)
            except OSError:
                pass
    return removed

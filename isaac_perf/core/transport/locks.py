"""Linux open-file-description (OFD) byte locks: the only synchronisation between writer and readers.

Why OFD locks: they belong to the open file description (one `os.open`), not to the process, so two
readers in one process conflict correctly, and the kernel drops them when the last descriptor closes,
which includes the death of the process: a crashed reader never pins a slot, a crashed writer never
blocks one. Each call is one non-blocking fcntl; locks may lie past the end of the file.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct

_F_OFD_SETLK = getattr(fcntl, 'F_OFD_SETLK', 37)  # Linux value; Python exposes it from 3.9 on Linux
_FLOCK = 'hhqqi4x'  # struct flock on 64-bit Linux: l_type, l_whence, l_start, l_len, l_pid (must be 0)
_BUSY = (errno.EAGAIN, errno.EACCES)


def try_lock(fd: int, offset: int, write: bool) -> bool:
    """Take a read or write lock on byte `offset`; False when another description holds a conflicting one."""
    kind = fcntl.F_WRLCK if write else fcntl.F_RDLCK
    try:
        fcntl.fcntl(fd, _F_OFD_SETLK, struct.pack(_FLOCK, kind, os.SEEK_SET, offset, 1, 0))
    except OSError as e:
        if e.errno in _BUSY:
            return False
        raise
    return True


def unlock(fd: int, offset: int) -> None:
    fcntl.fcntl(fd, _F_OFD_SETLK, struct.pack(_FLOCK, fcntl.F_UNLCK, os.SEEK_SET, offset, 1, 0))

"""Files a node writes stay inside one configured folder and never replace a file someone else made.

qos_tuner's `output_config_path` could be set by anyone on the graph: it created folders anywhere,
followed `..`, and atomically replaced an unrelated existing file. A writer now names a root folder (a
read-only parameter) and every path it is given is resolved under it:

- a relative path is taken relative to the root; an absolute one must already lie inside it;
- a path with a `..` component is refused outright, and so is one that reaches outside the root
  through a symbolic link (the resolved path is checked, not the text);
- an existing file is replaced only if it starts with `MARKER`, the first line of everything written
  here, i.e. only files this package made;
- only the root itself is created when missing, never folders above it or outside it.

`write_text` writes atomically (a temporary file beside the target, then `os.replace`).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

MARKER = '# written by isaac_perf'


class OutputPathError(ValueError):
    """A path a node was asked to write is refused; the message says why and what to do."""


def resolve_output(root: str | Path, requested: str | Path, what: str = 'output path') -> Path:
    """The absolute path `requested` names under `root`, or OutputPathError saying why it is refused."""
    text = str(requested)
    if not text.strip():
        raise OutputPathError(f'{what} is empty: give a file name inside {root}')
    if '\x00' in text:
        raise OutputPathError(f'{what} contains a NUL byte: give a plain file name inside {root}')
    root_path = Path(root).expanduser()
    if not root_path.is_absolute():
        raise OutputPathError(f'the output folder {root!r} is not absolute: configure an absolute folder')
    req = Path(text)
    if '..' in req.parts:
        raise OutputPathError(f'{what}={text!r} contains "..": give a path inside {root_path} without ".."')
    candidate = req if req.is_absolute() else root_path / req
    real_root = Path(os.path.realpath(root_path))
    real = Path(os.path.realpath(candidate))
    if not _inside(real, real_root) or not _inside(Path(os.path.normpath(candidate)), root_path):
        raise OutputPathError(f'{what}={text!r} is outside the output folder {root_path}: give a file name '
                              'inside it (the folder is a read-only parameter set at start-up)')
    if real == real_root or candidate.name == '':
        raise OutputPathError(f'{what}={text!r} names the output folder itself: give a file name inside it')
    if candidate.is_dir():
        raise OutputPathError(f'{what}={text!r} is a folder: give a file name')
    return real


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def ours(path: str | Path) -> bool:
    """True when `path` is a regular file whose first line is MARKER (a file this package wrote)."""
    try:
        with open(path, 'rb') as f:
            return f.readline().rstrip(b'\r\n') == MARKER.encode()
    except OSError:
        return False


def check_writable(root: str | Path, requested: str | Path, what: str = 'output path') -> Path:
    """Everything `write_text` checks, without writing: resolved path, or OutputPathError."""
    path = resolve_output(root, requested, what)
    if os.path.lexists(path) and not ours(path):
        raise OutputPathError(f'{what}={str(requested)!r}: {path} exists and was not written by isaac_perf; '
                              'choose another file name or remove that file yourself')
    parent = path.parent
    root_path = Path(os.path.realpath(Path(root).expanduser()))
    if not parent.exists() and parent != root_path:
        raise OutputPathError(f'{what}={str(requested)!r}: folder {parent} does not exist; create it inside '
                              f'{root_path} first, or write directly into {root_path}')
    return path


def write_text(root: str | Path, requested: str | Path, text: str, what: str = 'output path') -> Path:
    """Write `text` (prefixed by MARKER unless it starts with it) to `requested` under `root`, atomically."""
    path = check_writable(root, requested, what)
    if not text.startswith(MARKER):
        text = f'{MARKER}\n{text}'
    root_path = Path(os.path.realpath(Path(root).expanduser()))
    root_path.mkdir(mode=0o755, parents=True, exist_ok=True)  # the configured folder, and only it
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        # Checked again just before the replace: a file put there meanwhile is still not ours to replace.
        if os.path.lexists(path) and not ours(path):
            raise OutputPathError(f'{what}: {path} appeared meanwhile and was not written by isaac_perf')
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path

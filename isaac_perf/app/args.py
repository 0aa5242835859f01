"""argparse types that refuse bad command-line values at parse time, before any work starts.

`isaac-perf run --json /unwritable` used to run the whole job and lose its JSON in a traceback at the end;
`top --timeout nan` waited for "nan s"; `run --duration -5` ran until Ctrl-C. Each value is now checked
when the command line is parsed: argparse prints `isaac-perf <cmd>: error: argument --x: <why>` and
exits 2. Output paths are checked for writability without creating anything.

Standard library only: `isaac-perf --help` must stay fast.
"""
from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path


def number(kind: type = float, *, minimum: float | None = None, above: float | None = None,
           maximum: float | None = None, unit: str = '') -> Callable[[str], float]:
    """A finite int/float, optionally >= minimum, > above, <= maximum."""
    what = 'an integer' if kind is int else 'a number'

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not {what}') from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f'{text!r} is not a finite number')
        suffix = f' {unit}' if unit else ''
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f'{text} is below the minimum {minimum:g}{suffix}')
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f'{text} must be greater than {above:g}{suffix}')
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f'{text} is above the maximum {maximum:g}{suffix}')
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _first_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def output_problem(path: str | Path, kind: str = 'file') -> str:
    """'' when `path` can be written as a `kind` ('file' or 'dir'), creating missing folders; else why not.

    Nothing is created: the first existing ancestor must be a writable folder and not a special
    filesystem (/proc, /sys) that refuses new files.
    """
    if not str(path).strip():
        return 'is empty: give a path'
    path = Path(path).expanduser()
    if path.exists():
        if kind == 'file' and path.is_dir():
            return f'{path} is a folder: give a file path'
        if kind == 'dir' and not path.is_dir():
            return f'{path} exists and is not a folder: give a folder path'
        target = path if kind == 'dir' else path.parent
        if not os.access(path, os.W_OK) or not os.access(target, os.W_OK | os.X_OK):
            return f'{path} is not writable by this user: choose another path'
        return ''
    base = _first_existing(path.absolute().parent)
    if not base.is_dir():
        return f'{base} is not a folder, so {path} cannot be created: choose another path'
    if not os.access(base, os.W_OK | os.X_OK):
        return f'{base} is not writable by this user, so {path} cannot be created: choose another path'
    resolved = os.path.realpath(base)
    if resolved.startswith(('/proc', '/sys')) or resolved in ('/proc', '/sys'):
        return f'{path} is on a kernel filesystem ({resolved}): choose a path on a normal disk'
    return ''


def writable(kind: str = 'file') -> Callable[[str], str]:
    """An argparse type for an output file or folder path that can be written."""
    def parse(text: str) -> str:
        problem = output_problem(text, kind)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return text
    parse.__name__ = f'writable {kind}'
    return parse

"""`isaac-perf`: one CLI for run / bench / report / top. Each sub-command lives in isaac_perf.app.<name>.

Sub-command modules expose `add_arguments(parser)` and `main(args) -> int`; they are imported only when
chosen, so `isaac-perf top` never pays for torch and `isaac-perf run` never for matplotlib.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    'run': 'compose the pipeline (image_source -> inference -> monitor) in one process and report',
    'bench': 'benchmark harness: fixed-rate runs, peak-throughput search, compare result files',
    'report': 'profile report (JSON/Markdown/PNG) from a profile or benchmark file',
    'top': 'live terminal view of /performance_metrics and /diagnostics',
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='isaac-perf', description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for name, help_text in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(module=f'isaac_perf.app.{name}')
        try:
            importlib.import_module(f'isaac_perf.app.{name}').add_arguments(sub_parser)
        except ModuleNotFoundError as exc:
            if exc.name != f'isaac_perf.app.{name}':
                raise
            sub_parser.set_defaults(missing=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, 'missing', False):
        print(f'isaac-perf {args.command}: not available in this build', file=sys.stderr)
        return 2
    return int(importlib.import_module(args.module).main(args) or 0)


if __name__ == '__main__':
    sys.exit(main())

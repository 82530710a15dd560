"""``bgflow-sci`` command line: one module per command group, each parsing its arguments and calling one function
of :mod:`bgflow_sci.workflows`.

``bgflow-sci demo --out DIR`` runs the embedded default job; ``md`` runs reference MD of a molecule config;
``train`` / ``sample`` / ``reweight`` / ``enhanced-md`` run a Boltzmann generator for any system folder;
``morph`` is the HEP sim-to-data tool.
Input errors of the library (a missing or corrupt file, a bad setting, a branch that is not there) end the command
with ``error: <message>`` on stderr and exit status 1, without a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import demo, enhanced_md, md, morph, reweight, sample, train

__all__ = ["build_parser", "main"]

_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)  # the library's input errors; bugs keep tracebacks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bgflow-sci", description="Boltzmann generators and scientific sampling.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (demo, md, train, sample, reweight, enhanced_md, morph):
        group.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _USER_ERRORS as err:
        raise SystemExit(f"error: {err}") from err

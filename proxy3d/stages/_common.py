"""The command-line preamble every ``proxy3d <stage>`` shares: ``--params``, ``--metrics`` and ``-S/--set``."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from proxy3d.config import Params, load_params


def command_parser(name: str, description: str) -> argparse.ArgumentParser:
    """An empty parser for ``proxy3d <name>``."""
    return argparse.ArgumentParser(prog=f"proxy3d {name}", description=description)


def stage_parser(name: str, description: str, sections: str, metrics: Path | None, example: str,
                 metrics_help: str = "metrics JSON to write", metavar: str | None = None) -> argparse.ArgumentParser:
    """Parser for pipeline stage ``name`` with the shared options; the caller adds its path options.

    ``sections`` names the params sections read (for ``--help``); ``metrics`` is the default metrics file
    (the path dvc.yaml declares; None when the stage derives it); ``example`` is a ``-S`` override shown in
    ``--help``, e.g. ``proxies.budget=450``; ``metavar`` defaults to ``<section of example>.KEY=VALUE``.
    """
    ap = command_parser(name, description)
    ap.add_argument("--params", default="params.yaml", help=f"params file ({sections})")
    ap.add_argument("--metrics", type=Path, default=metrics, help=metrics_help)
    ap.add_argument("-S", "--set", action="append", default=[],
                    metavar=metavar or f"{example.split('.', 1)[0]}.KEY=VALUE",
                    help=f"override a param, e.g. -S {example} (repeatable)")
    return ap


def load_stage_params(args: argparse.Namespace, extra: Iterable[str] = ()) -> Params:
    """``--params`` file with the ``-S`` overrides (then ``extra`` ones) applied."""
    return load_params(args.params, [*args.set, *extra])

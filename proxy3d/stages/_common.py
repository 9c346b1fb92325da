"""The command-line preamble every ``proxy3d <stage>`` shares: ``--params``, ``--metrics`` and ``-S/--set``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from pathlib import Path

from proxy3d.config import Params, load_params

log = logging.getLogger(__name__)

DEFAULT_PARAMS = Path("params.yaml")


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
    ap.add_argument("--params", type=Path, default=None,
                    help=f"params file ({sections}); default: ./params.yaml, or the built-in defaults "
                         "without one")
    ap.add_argument("--metrics", type=Path, default=metrics, help=metrics_help)
    ap.add_argument("-S", "--set", action="append", default=[],
                    metavar=metavar or f"{example.split('.', 1)[0]}.KEY=VALUE",
                    help=f"override a param, e.g. -S {example} (repeatable)")
    return ap


def params_file(given: Path | str | None) -> Path:
    """The params file to read: ``--params`` as given, else ``./params.yaml``.

    A ``--params`` that names no file is an error rather than the built-in defaults: a typo would
    otherwise run the stage with other settings than the ones the user chose. Without ``--params``
    (a tool run outside a checkout) a missing ``./params.yaml`` still means the built-in defaults.
    """
    if given is None:
        if not DEFAULT_PARAMS.is_file():
            log.warning("no %s in %s: using the built-in defaults (proxy3d/config.py)", DEFAULT_PARAMS,
                        Path.cwd())
        return DEFAULT_PARAMS
    path = Path(given)
    if not path.is_file():
        raise FileNotFoundError(f"--params {given}: no such file; pass an existing params file "
                                "(e.g. --params params.yaml) or leave --params out")
    return path


def load_stage_params(args: argparse.Namespace, extra: Iterable[str] = ()) -> Params:
    """``--params`` file (see :func:`params_file`) with the ``-S`` overrides (then ``extra`` ones) applied."""
    return load_params(params_file(args.params), [*args.set, *extra])

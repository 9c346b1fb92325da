"""The command-line preamble every ``proxy3d <stage>`` shares: ``--params``, ``--metrics`` and ``-S/--set``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from pathlib import Path

from proxy3d.config import Params, load_params

log = logging.getLogger(__name__)

DEFAULT_PARAMS = Path("params.yaml")


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` shows each option's default, unless its help already says it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        none = action.default is None or action.default is False or action.default in ("", [])
        if "default" in text or none or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def command_parser(name: str, description: str) -> argparse.ArgumentParser:
    """An empty parser for ``proxy3d <name>``."""
    return argparse.ArgumentParser(prog=f"proxy3d {name}", description=description,
                                   formatter_class=HelpFormatter)


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
    if path.is_dir():
        raise FileNotFoundError(f"--params {given} is a folder, not a params file; pass a file such as "
                                f"--params {path / 'params.yaml'}")
    if not path.is_file():
        raise FileNotFoundError(f"--params {given}: no such file; pass an existing params file "
                                "(e.g. --params params.yaml) or leave --params out")
    return path


def check_output_file(option: str, path: Path | str | None) -> None:
    """Refuse an output file path that cannot be written (an existing folder, or a file where a folder of its
    path must be) now, not after the stage ran: the stage's result would be lost at the last step."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give the path of a file (e.g. {path / 'FILE'}) or "
                         f"leave {option} out for its default")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {path}: {parent} is a file, not a folder; give a path in a "
                                 "folder")
            return


def load_stage_params(args: argparse.Namespace, extra: Iterable[str] = (),
                      outputs: Iterable[str] = ()) -> Params:
    """``--params`` file (see :func:`params_file`) with the ``-S`` overrides (then ``extra`` ones) applied.

    ``--metrics`` and the output file options named in ``outputs`` (argparse dests, e.g. ``plot``) are checked
    first (:func:`check_output_file`)."""
    for dest in ("metrics", *outputs):
        check_output_file(f"--{dest.replace('_', '-')}", getattr(args, dest))
    return load_params(params_file(args.params), [*args.set, *extra])

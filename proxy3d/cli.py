"""``proxy3d`` console script: one subcommand per pipeline stage plus tools.

Subcommands are imported lazily, so ``proxy3d --help`` is instant and a stage only pays for the
libraries it uses. Each target module exposes ``main(argv: list[str] | None) -> int`` with its own
argparse parser (``prog="proxy3d <name>"``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# name -> (module, one-line help). Order = pipeline order, then tools.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("proxy3d.scenes.synth_cli", "generate the deterministic synthetic ScanNet-layout dataset (synth data)"),
    "import-scannet": ("proxy3d.scenes.import_cli", "import ScanNet .sens files (or a video) into the ScanNet export layout"),
    "spacespan": ("proxy3d.stages.spacespan", "stage: assemble SpaceSpan with PySpark (readers, quarantine, splits, curriculum)"),
    "symbols": ("proxy3d.stages.symbols", "stage: render symbol maps (Stable Diffusion) and identifier maps"),
    "triplets": ("proxy3d.stages.triplets", "stage: encoder features + point maps + masks -> patch triplets per scene"),
    "proxies": ("proxy3d.stages.proxies", "stage: triplets -> proxy tokens, with method/budget quality metrics"),
    "tokenize": ("proxy3d.stages.tokenize_cli", "tool: tokenize one triplets file or folder (--budget, --method)"),
    "train": ("proxy3d.stages.train", "stage: curriculum training stage N (train --stage N) with DeepSpeed"),
    "evaluate": ("proxy3d.stages.evaluate", "stage: evaluate the stage-4 model and baselines on every benchmark"),
    "score": ("proxy3d.eval.score_cli", "tool: score a predictions file in a benchmark's submission format"),
    "runs": ("proxy3d.runs_cli", "tool: list / compare MLflow runs (runs compare)"),
}


def _parser() -> argparse.ArgumentParser:
    width = max(len(n) for n in COMMANDS) + 2
    lines = "\n".join(f"  {n:<{width}}{h}" for n, (_, h) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="proxy3d",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Proxy3D: turn indoor video into a few hundred 3D proxy tokens for a VLM, "
        "and train/evaluate that VLM.\nStages read params.yaml (see proxy3d/config.py); "
        "'dvc repro' runs them all in order.",
        epilog=f"commands:\n{lines}\n\nRun 'proxy3d <command> --help' for a command's options.",
    )
    p.add_argument("command", nargs="?", help="one of the commands below")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    # split: global options and command name first, the rest belongs to the command
    head: list[str] = []
    while argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        head.append(argv.pop(0))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    args = parser.parse_args([*head, name])
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from: {', '.join(COMMANDS)}")
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except (ValueError, OSError, RuntimeError) as e:  # user errors (bad input, paths, stores): one line
        if args.verbose:
            raise
        print(f"proxy3d {name}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

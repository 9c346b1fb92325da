"""``proxy3d runs``: list recent MLflow runs and compare them side by side.

``proxy3d runs compare`` takes the newest pipeline runs (or the run ids given) and prints the params
that differ between them and their key metrics. A pipeline (parent) run's params are the whole
params.yaml it ran with; its metrics are its stages' metrics as ``<stage>/<metric>``. A plain stage
run (``dvc repro`` without Prefect) contributes its own params and metrics.
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.table import Table

from proxy3d import tracking
from proxy3d.stages._common import HelpFormatter


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _gather(run: dict[str, Any], experiment: str) -> tuple[dict[str, str], dict[str, float]]:
    """Params and metrics of a run, completed from its child runs when it is a pipeline run."""
    params = dict(run["params"])
    metrics = dict(run["metrics"])
    is_pipeline = run["tags"].get("proxy3d.kind") == "pipeline"  # its params are the whole params.yaml
    for child in tracking.child_runs(run["run_id"], experiment):
        for k, v in ({} if is_pipeline else child["params"]).items():
            params.setdefault(f"{child['name']}.{k}", v)
        for k, v in child["metrics"].items():
            metrics.setdefault(f"{child['name']}/{k}", v)
    return params, metrics


def _label(run: dict[str, Any]) -> str:
    return f"{run['name']} {run['run_id'][:8]}"


def select_runs(run_ids: list[str], n: int, experiment: str = "proxy3d") -> list[dict[str, Any]]:
    """The runs given, else the newest ``n`` pipeline runs, else the newest ``n`` top-level runs."""
    if run_ids:
        return [tracking.get_run(r) for r in run_ids]
    return tracking.recent_runs(n, experiment, pipelines_only=True) or tracking.recent_runs(n, experiment)


def compare_table(runs: list[dict[str, Any]], metric_pattern: str = "", all_params: bool = False,
                  experiment: str = "proxy3d"
                  ) -> tuple[list[str], list[tuple[str, list[str]]], list[tuple[str, list[str]]]]:
    """(column labels, differing param rows, metric rows). A row is (name, one value per run)."""
    gathered = [_gather(r, experiment) for r in runs]
    param_keys = sorted(set().union(*(g[0] for g in gathered)))
    params = []
    for k in param_keys:
        values = [g[0].get(k, "-") for g in gathered]
        if all_params or len(set(values)) > 1:
            params.append((k, values))
    pattern = re.compile(metric_pattern) if metric_pattern else None
    metric_keys = sorted(k for k in set().union(*(g[1] for g in gathered)) if not pattern or pattern.search(k))
    metrics = [(k, [f"{g[1][k]:.4g}" if k in g[1] else "-" for g in gathered]) for k in metric_keys]
    return [_label(r) for r in runs], params, metrics


def _print_table(console: Console, title: str, columns: list[str], rows: list[tuple[str, list[str]]]) -> None:
    table = Table(title=title)
    table.add_column("name")
    for c in columns:
        table.add_column(c, justify="right")
    for name, values in rows:
        table.add_row(name, *values)
    console.print(table)


def cmd_list(a: argparse.Namespace, console: Console) -> int:
    runs = tracking.recent_runs(a.n, a.experiment, pipelines_only=a.pipelines)
    table = Table(title=f"newest runs ({tracking.tracking_uri()})")
    for c in ("run id", "name", "status", "started", "children", "skipped stages"):
        table.add_column(c)
    for r in runs:
        table.add_row(r["run_id"], r["name"] or "-", r["status"], _when(r["start_time"]),
                      str(len(tracking.child_runs(r["run_id"], a.experiment))), r["tags"].get("proxy3d.skipped_stages", ""))
    console.print(table)
    return 0


def cmd_compare(a: argparse.Namespace, console: Console) -> int:
    runs = select_runs(a.run_ids, a.n, a.experiment)
    if len(runs) < 2:
        raise ValueError(f"need at least 2 runs to compare in {tracking.tracking_uri()}, found {len(runs)}; "
                         "run the pipeline twice (e.g. with different proxies.budget) or pass run ids")
    columns, params, metrics = compare_table(runs, a.metric, a.all_params, a.experiment)
    console.print(f"comparing {len(runs)} runs from {tracking.tracking_uri()}")
    _print_table(console, "params" if a.all_params else "params that differ", columns, params or [("(none)", ["-"] * len(columns))])
    _print_table(console, "metrics", columns, metrics or [("(none)", ["-"] * len(columns))])
    return 0


def _regex(text: str) -> str:
    """``--metric``: checked when the arguments are parsed, so a typo is a usage error and not a traceback."""
    try:
        re.compile(text)
    except re.error as e:
        msg = f"{text!r} is not a regular expression ({e}); e.g. 'acc|f1'"
        raise argparse.ArgumentTypeError(msg) from None
    return text


def _positive(text: str) -> int:
    """``-n``: a count of runs, checked when the arguments are parsed."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer; e.g. -n 5")
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="proxy3d runs", description="List and compare MLflow runs "
                                "(store: MLFLOW_TRACKING_URI, default sqlite:///<repo>/mlruns.db).",
                                formatter_class=HelpFormatter)
    p.add_argument("--experiment", default="proxy3d", help="MLflow experiment (default proxy3d)")
    sub = p.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("list", help="newest top-level runs with their status and skipped stages",
                        formatter_class=HelpFormatter,
                        description="List the newest top-level runs of --experiment, newest first: run id, "
                                    "name, status, start time, number of child (stage) runs and the stages "
                                    "the pipeline skipped as up to date.")
    pl.add_argument("-n", type=_positive, default=10, help="how many runs (default 10)")
    pl.add_argument("--pipelines", action="store_true", help="only pipeline (parent) runs")
    pc = sub.add_parser("compare", help="params that differ and key metrics, side by side",
                        formatter_class=HelpFormatter,
                        description="Compare runs side by side: the params that differ between them and "
                                    "their metrics (a pipeline run's metrics are its stages' as "
                                    "<stage>/<metric>).")
    pc.add_argument("run_ids", nargs="*", help="runs to compare (default: the newest -n pipeline runs)")
    pc.add_argument("-n", type=_positive, default=2,
                    help="how many newest runs when no ids are given (default 2)")
    pc.add_argument("--metric", type=_regex, default="",
                    help="regex selecting metrics (e.g. 'acc|f1|cider'); default all")
    pc.add_argument("--all-params", action="store_true", help="show every param, not only those that differ")
    a = p.parse_args(argv)
    names = tracking.experiment_names()
    if a.experiment not in names:  # reading must not create it, as the writers would
        raise ValueError(f"--experiment {a.experiment!r}: no such experiment in {tracking.tracking_uri()}; "
                         f"existing: {', '.join(names) or 'none'} (a stage or pipeline run creates its "
                         "experiment)")
    console = Console(width=160)
    return cmd_list(a, console) if a.cmd == "list" else cmd_compare(a, console)

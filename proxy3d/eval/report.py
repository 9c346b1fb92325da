"""``reports/eval.md`` (tables shaped like the paper's Tables 2-4) and PNG plots from evaluation results.

Input: ``{variant: {tokens, method, budget, benchmarks: {benchmark: {metric: value}}}}`` as returned by
:func:`proxy3d.eval.evaluate.evaluate`. Scores are shown ×100; '–' marks a metric that does not apply.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from proxy3d.eval.evaluate import HEADLINE
from proxy3d.io import atomic_path, atomic_write_text

TABLES: list[tuple[str, list[tuple[str, str, str]]]] = [
    ("Table 2: 3D grounding and dense captioning", [
        ("ScanRefer Acc@0.25", "scanrefer", "acc@0.25"), ("Acc@0.5", "scanrefer", "acc@0.5"),
        ("unique@0.25", "scanrefer", "unique_acc@0.25"), ("multiple@0.25", "scanrefer", "multiple_acc@0.25"),
        ("Multi3DRefer F1@0.25", "multi3drefer", "f1@0.25"), ("F1@0.5", "multi3drefer", "f1@0.5"),
        ("Scan2Cap C@0.5", "scan2cap", "cider@0.5"), ("B-4@0.5", "scan2cap", "bleu4@0.5"),
        ("M@0.5", "scan2cap", "meteor@0.5"), ("R@0.5", "scan2cap", "rouge_l@0.5")]),
    ("Table 3: 3D question answering", [
        ("ScanQA C", "scanqa", "cider"), ("B-4", "scanqa", "bleu4"), ("M", "scanqa", "meteor"),
        ("R", "scanqa", "rouge_l"), ("EM", "scanqa", "em"), ("EM-R", "scanqa", "refined_em"),
        ("SQA3D EM", "sqa3d", "em"), ("What", "sqa3d", "em_what"), ("Is", "sqa3d", "em_is"),
        ("How", "sqa3d", "em_how"), ("Can", "sqa3d", "em_can"), ("Which", "sqa3d", "em_which"),
        ("Others", "sqa3d", "em_others")]),
]


def _fmt(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * float(v):.1f}"


def _get(r: dict[str, Any], bench: str, metric: str) -> Any:
    return r["benchmarks"].get(bench, {}).get(metric)


def _table(results: dict[str, Any], cols: list[tuple[str, str, str]]) -> list[str]:
    lines = ["| Method | Tokens | " + " | ".join(c[0] for c in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for name, r in results.items():
        lines.append(f"| {name} | {r['tokens']:.0f} | " + " | ".join(_fmt(_get(r, b, m)) for _, b, m in cols) + " |")
    return lines


def _vsi_columns(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    keys = sorted({k for r in results.values() for k in r["benchmarks"].get("vsibench", {})
                   if k not in ("overall", "n_items")})
    return [("Avg", "vsibench", "overall")] + [(k.replace("_accuracy", "").replace("_MRA", " (MRA)"), "vsibench", k)
                                                for k in keys]


def _comparison_table(comparisons: dict[str, Any]) -> list[str]:
    lines = ["| Comparison | Metric | Model | Baseline | Difference | 95% interval | Items |", "|---|---|---:|---:|---:|---|---:|"]
    for name, rows in comparisons.items():
        for metric, r in rows.items():
            diff = f"{100 * r['diff']:+.1f}"
            if r["lo"] > 0 or r["hi"] < 0:  # the interval excludes 0
                diff = f"**{diff}**"
            lines.append(f"| {name} | {metric} | {_fmt(r['a'])} | {_fmt(r['b'])} | {diff} | "
                         f"[{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}] | {r['n_items']:.0f} |")
    return lines


BOX_SOURCE_TEXT = {
    "proxies": "Grounding and captions: a generated `<OBJxxx>` is the box of the points of the proxies carrying "
               "identifier xxx in the proxies that row's model was fed (`blind` and `random_object`: the default "
               "method and budget's), scored against the GT box (`evaluate.box_source: proxies`).",
    "gt": "Grounding and captions: a generated `<OBJxxx>` is the GT box of object xxx (`evaluate.box_source: gt`: "
          "the tokenizer's boxes do not enter the scores).",
}


def markdown(results: dict[str, Any], command: str = "dvc repro evaluate",
             comparisons: dict[str, Any] | None = None, box_source: str | None = None) -> str:
    """The report: one section per table, every variant a row; then the paired-bootstrap comparisons."""
    n_items = {b: int(m.get("n_items", 0)) for r in results.values() for b, m in r["benchmarks"].items()}
    out = ["# Proxy3D evaluation", "",
           f"Produced by `{command}` on the val split (curriculum stage 4). Scores ×100. Items per benchmark: "
           + ", ".join(f"{b} {n}" for b, n in sorted(n_items.items())) + ".",
           "Rows: the stage-4 model on semantic proxies at each budget; `global_kmeans@K` = the model fed "
           "global k-means proxies (ablation); `blind` = stage 4 trained and run with no visual tokens; "
           "`random_object` = a random object of the scene (grounding only); `frequency` = the train split's most "
           "frequent answer per question type (median for numeric VSI-Bench questions; QA and VSI-Bench only)."
           + (" " + BOX_SOURCE_TEXT[box_source] if box_source else ""), ""]
    for title, cols in [*TABLES, ("Table 4: VSI-Bench", _vsi_columns(results))]:
        out += [f"## {title}", "", *_table(results, cols), ""]
    other = sorted({b for r in results.values() for b in r["benchmarks"]} - {b for _, c in TABLES for _, b, _ in c}
                   - {"vsibench"})
    if other:
        out += ["## Other tasks (exact match)", "", *_table(results, [(b, b, "em") for b in other]), ""]
    if comparisons:
        out += ["## Model vs baselines (paired bootstrap over items)", "",
                "Difference = model - baseline on the same items (×100), with a 95% percentile interval from "
                "resampling the items (within each VSI-Bench question type); a **bold** difference: its interval excludes 0. "
                "ScanQA and Scan2Cap (corpus metrics) are not resampled. See `proxy3d/eval/significance.py`. "
                "`vsi_probe.*` rows: the VSI-Bench numeric probe (`evaluate.spatial_probe`), templated VSI-Bench "
                "questions about every val object (counting, absolute distance, object size, room size; the "
                "annotation writer's templates and geometry), not val-split items.", "",
                *_comparison_table(comparisons), ""]
    out += ["Plots: `eval/score_vs_tokens.png` (headline score per benchmark vs visual tokens), "
            "`eval/per_task.png` (headline score per benchmark and method).", ""]
    return "\n".join(out)


def plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """``score_vs_tokens.png`` and ``per_task.png`` in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = [b for b in HEADLINE if any(b in r["benchmarks"] for r in results.values())]
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for b in benches:
        pts = sorted((r["tokens"], _get(r, b, HEADLINE[b])) for r in results.values()
                     if r["method"] not in ("blind", "random_object", "frequency") and _get(r, b, HEADLINE[b]) is not None
                     and r["method"] == next(iter(results.values()))["method"])
        if pts:
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=f"{b} {HEADLINE[b]}")
        for name in ("blind",):
            if name in results and _get(results[name], b, HEADLINE[b]) is not None:
                ax.scatter([results[name]["tokens"]], [100 * _get(results[name], b, HEADLINE[b])], marker="x")
    ax.set_xlabel("visual tokens per scene")
    ax.set_ylabel("score ×100")
    ax.set_title("Score vs tokens (x at 0 tokens = blind)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "score_vs_tokens.png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(benches)), 4.5))
    names = list(results)
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        vals = [_get(results[name], b, HEADLINE[b]) for b in benches]
        ax.bar([j + i * width for j in range(len(benches))], [100 * v if v is not None and math.isfinite(v) else 0
                                                              for v in vals], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(benches))])
    ax.set_xticklabels([f"{b}\n{HEADLINE[b]}" for b in benches], fontsize=7)
    ax.set_ylabel("score ×100")
    ax.set_title("Per-task headline score")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "per_task.png"))
    plt.close(fig)
    return paths


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def write_report(results: dict[str, Any], md_path: Path, plots_dir: Path,
                 command: str = "dvc repro evaluate", comparisons: dict[str, Any] | None = None,
                 box_source: str | None = None) -> list[Path]:
    """The Markdown report at ``md_path`` and the PNG plots in ``plots_dir``; returns the written paths."""
    atomic_write_text(Path(md_path), markdown(results, command, comparisons, box_source))
    return [Path(md_path), *plots(results, Path(plots_dir))]

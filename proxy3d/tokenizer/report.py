"""Plot of oracle grounding accuracy against tokens per scene, per method, clean and noisy labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from proxy3d.io import atomic_path


def plot_budget(grid: dict[str, dict[str, dict[str, dict[str, Any]]]], path: str | Path) -> None:
    """``grid`` as returned by :func:`proxy3d.tokenizer.quality.evaluate_grid`; writes a PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    colors: dict[str, Any] = {}
    for ax, metric, title in ((axes[0], "acc25", "Oracle grounding Acc@0.25"), (axes[1], "acc50", "Oracle grounding Acc@0.5")):
        for cond, style in (("clean", "-o"), ("noisy", "--s")):
            for method, by_budget in grid.get(cond, {}).items():
                rows = sorted(by_budget.values(), key=lambda r: r["tokens_per_scene"])
                if not rows:
                    continue
                line = ax.plot([r["tokens_per_scene"] for r in rows], [r[metric] for r in rows], style,
                               color=colors.get(method), label=f"{method} ({cond})", markersize=4)[0]
                colors.setdefault(method, line.get_color())
        ax.set_title(title)
        ax.set_xlabel("tokens per scene")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("% of ground-truth objects")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("Proxy tokenizer: accuracy vs tokens (solid: ground-truth masks, dashed: label-noise model)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

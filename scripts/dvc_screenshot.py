"""Regenerate docs/img/dvc.png: the real terminal output of ``dvc dag`` and ``dvc exp show`` (key metric and
param columns) in this checkout, rendered as a terminal page and screenshotted in real Chromium.

Nothing is made up: the page shows exactly what the two commands print (metrics come from the
``metrics/*.json`` the stages wrote; a stage that has not run shows ``-`` / ``!``). Run after ``dvc repro``:

    .venv/bin/python scripts/dvc_screenshot.py [--project .] [--out docs/img/dvc.png]

Needs /usr/bin/chromium (scripts/install_browser.sh) and pip playwright (never ``playwright install``).
"""

from __future__ import annotations

import argparse
import html
import os
import subprocess
import sys
from pathlib import Path

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-dev-shm-usage"]
# `dvc exp show` columns worth a screenshot (regexes over column names; the full table is ~500 columns wide)
KEEP = ("Experiment|Created|^records$|^quarantined$|^symbols$|^identifiers$|valid_pct|labelled_pct|"
        "^tokens_per_scene$|semantic_minus_global_kmeans_acc50.clean|^loss$|^final_loss$|proxies.budget|proxies.method")
COMMANDS = [["dag"], ["exp", "show", "--no-pager", "--drop", ".*", "--keep", KEEP]]

PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>
body {{ margin: 0; background: #1e1e1e; }}
.term {{ padding: 14px 18px; font: 11px/1.25 'DejaVu Sans Mono', 'Liberation Mono', monospace; color: #d4d4d4;
        white-space: pre; display: inline-block; }}
.prompt {{ color: #6a9955; }} .cmd {{ color: #ffffff; font-weight: bold; }}
</style></head><body><div class="term">{body}</div></body></html>"""


def run_dvc(project: Path, args: list[str]) -> str:
    """stdout of ``dvc <args>`` in ``project`` (wide terminal, no analytics); raises with stderr on failure."""
    dvc = str(Path(sys.executable).parent / "dvc")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "COLUMNS": "400"}
    out = subprocess.run([dvc, *args], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {project} (exit {out.returncode}):\n{out.stderr}")
    return "\n".join(line.rstrip() for line in out.stdout.splitlines()).strip("\n")


def render(blocks: list[tuple[str, str]]) -> str:
    """Terminal-like HTML page for ``[(command line, output), ...]``."""
    parts = [f'<span class="prompt">$</span> <span class="cmd">{html.escape(cmd)}</span>\n{html.escape(out)}\n'
             for cmd, out in blocks]
    return PAGE.format(body="\n".join(parts))


def screenshot(page_html: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"{CHROMIUM} missing: run scripts/install_browser.sh (or set CHROMIUM)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 800, "height": 400})
        page.set_content(page_html)
        page.locator(".term").screenshot(path=str(tmp))
        browser.close()
    tmp.replace(out)  # atomic: a failed run leaves the old image


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Screenshot `dvc dag` + `dvc exp show` of a checkout in real Chromium.")
    ap.add_argument("--project", type=Path, default=Path("."), help="the DVC project (default: .)")
    ap.add_argument("--out", type=Path, default=Path("docs/img/dvc.png"), help="PNG to write")
    ap.add_argument("--html", type=Path, default=None, help="also keep the rendered page here")
    args = ap.parse_args(argv)
    shown = {"dag": "dvc dag", "exp": "dvc exp show --drop '.*' --keep '<key metrics and params>'"}
    blocks = [(shown[c[0]], run_dvc(args.project, c)) for c in COMMANDS]
    page = render(blocks)
    if args.html:
        args.html.write_text(page)
    screenshot(page, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Thin helpers around the DVC project that the flows drive: stage list, dvc.lock entries, metrics
files, params overrides and running ``dvc`` with transient errors told apart. No ML code here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

# Output fragments that mean "try again" rather than "the stage is broken".
TRANSIENT_MARKERS = (
    "Unable to acquire lock",  # another dvc process holds the repo lock
    "is busy, it is being blocked by",
    "Connection refused",  # tracking server restarting
    "Temporary failure in name resolution",
    "Too many open files",
    "database is locked",  # SQLite store contention
)


class StageError(RuntimeError):
    """A DVC stage failed; the message carries the tail of its output."""


class TransientStageError(StageError):
    """A failure worth retrying (lock held, server briefly unavailable)."""


def venv_bin() -> Path:
    """The folder holding the running interpreter's console scripts (dvc, proxy3d)."""
    return Path(sys.executable).parent


def stage_names(project: Path) -> list[str]:
    """Stages of ``project/dvc.yaml`` in file order (the file is written in pipeline order)."""
    path = project / "dvc.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; project_dir must be a DVC project with a dvc.yaml")
    return list((yaml.safe_load(path.read_text()) or {}).get("stages", {}))


def check_stage(project: Path, stage: str) -> None:
    names = stage_names(project)
    if stage not in names:
        raise ValueError(f"stage {stage!r} is not in {project / 'dvc.yaml'}; choose from: {', '.join(names)}")


def lock_entry(project: Path, stage: str) -> dict[str, Any] | None:
    """The stage's entry in dvc.lock (cmd, deps, params, outs with hashes), or None before its first run."""
    path = project / "dvc.lock"
    if not path.exists():
        return None
    return ((yaml.safe_load(path.read_text()) or {}).get("stages") or {}).get(stage)


def stage_hash(entry: dict[str, Any] | None) -> str:
    """sha256 of the canonical JSON of a dvc.lock entry: equal hashes = same command, inputs and outputs."""
    if entry is None:
        return "none"
    return hashlib.sha256(json.dumps(entry, sort_keys=True, default=str).encode()).hexdigest()


def metrics_files(project: Path, stage: str) -> list[Path]:
    """The metrics files a stage declares in dvc.yaml."""
    spec = (yaml.safe_load((project / "dvc.yaml").read_text()) or {}).get("stages", {}).get(stage, {})
    files = []
    for item in spec.get("metrics", []) or []:
        files.append(project / (next(iter(item)) if isinstance(item, dict) else item))
    return files


def read_metrics(project: Path, stage: str) -> dict[str, float]:
    """Numeric values of the stage's metrics files, flattened to ``a.b`` keys (missing files are skipped)."""
    out: dict[str, float] = {}

    def walk(obj: Any, pre: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{pre}{k}.")
        elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
            out[pre[:-1]] = float(obj)

    for f in metrics_files(project, stage):
        if f.exists():
            try:
                walk(json.loads(f.read_text()), "")
            except json.JSONDecodeError as e:
                log.warning("metrics file %s is not valid JSON (%s); not recorded", f, e)
    return out


def apply_overrides(project: Path, overrides: Iterable[str]) -> list[str]:
    """Set ``section.key=value`` entries in ``project/params.yaml`` the way ``dvc exp run -S`` does.

    Values are parsed as YAML (``450`` → int, ``[1, 2]`` → list). The file keeps its comments and is
    replaced atomically; an unknown section or key, or a value of the wrong type for proxy3d/config.py's
    schema, raises ValueError naming the override and leaves the file as it was. Returns the overrides
    applied.
    """
    from ruamel.yaml import YAML

    applied = [o.strip() for o in overrides if o and o.strip()]
    if not applied:
        return []
    path = project / "params.yaml"
    rt = YAML()
    rt.preserve_quotes = True
    doc = rt.load(path.read_text()) if path.exists() else {}
    for item in applied:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected section.key=value (e.g. proxies.budget=450)")
        *parents, leaf = key.split(".")
        node = doc
        for part in parents:
            if part not in node:
                raise ValueError(f"override {item!r}: {part!r} is not a section/key in {path}; check the spelling")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"override {item!r}: {leaf!r} is not a key of {'.'.join(parents) or 'the top level'} "
                             f"in {path}; check the spelling")
        node[leaf] = yaml.safe_load(raw)
        _check_section(rt, doc, key.split(".")[0], item, path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("w") as f:
            rt.dump(doc, f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("params.yaml: applied %s", ", ".join(applied))
    return applied


def _check_section(rt: Any, doc: Any, section: str, item: str, path: Path) -> None:
    """Load ``doc[section]`` (with ``item`` applied) through proxy3d.config.load_params: a wrong type fails
    here, before params.yaml is written, rather than in the stage that reads it. Only the overridden section
    is checked, so the error is about the override and not about another section of the file."""
    import tempfile

    from proxy3d.config import ParamsError, load_params

    with tempfile.TemporaryDirectory(prefix="proxy3d-override-") as d:
        check = Path(d) / path.name
        with check.open("w") as f:
            rt.dump({section: doc[section]}, f)
        try:
            load_params(check)
        except ParamsError as e:
            reason = str(e).removeprefix(f"{check}: ")
            raise ValueError(f"override {item!r}: {reason}; {path} is unchanged") from None


def run_dvc(args: list[str], project: Path, on_line: Callable[[str], None] | None = None,
            env: dict[str, str] | None = None) -> str:
    """Run ``dvc <args>`` in ``project``, streaming each output line to ``on_line``; return the output.

    Raises TransientStageError for lock/connection trouble, StageError for anything else non-zero.
    """
    dvc = venv_bin() / "dvc"
    cmd = [str(dvc) if dvc.exists() else "dvc", *args]
    run_env = dict(os.environ if env is None else env)
    run_env["PATH"] = f"{venv_bin()}{os.pathsep}{run_env.get('PATH', '')}"  # stage cmds call `proxy3d`
    run_env.setdefault("DVC_NO_ANALYTICS", "1")
    lines: list[str] = []
    try:
        proc = subprocess.Popen(cmd, cwd=project, env=run_env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
    except OSError as e:
        raise TransientStageError(f"could not start {cmd[0]}: {e}") from e
    assert proc.stdout is not None  # noqa: S101 - guaranteed by stdout=PIPE
    for line in proc.stdout:
        line = line.rstrip("\n")
        lines.append(line)
        if on_line:
            on_line(line)
    rc = proc.wait()
    output = "\n".join(lines)
    if rc != 0:
        tail = "\n".join(lines[-40:])
        kind = TransientStageError if any(m in output for m in TRANSIENT_MARKERS) else StageError
        raise kind(f"`dvc {' '.join(args)}` in {project} exited with {rc}:\n{tail}")
    return output

"""dvc.yaml contracts (static) and DVC behaviour on a throwaway project: no-op repro is fast and reruns
nothing, a param change reruns only what reads it, `dvc exp run -S` works and `dvc exp show` has metrics."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows import demo_project
from proxy3d import cli
from proxy3d.config import Params

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")
ORDER = ["spacespan", "symbols", "triplets", "proxies", "train_stage1", "train_stage2", "train_stage3",
         "train_stage4", "train_blind", "evaluate"]


@pytest.fixture(scope="module")
def stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _paths(items: list) -> list[str]:
    return [next(iter(i)) if isinstance(i, dict) else i for i in items or []]


def test_pipeline_has_every_stage_in_order(stages: dict) -> None:
    assert list(stages) == ORDER


def test_commands_are_proxy3d_subcommands(stages: dict) -> None:
    for name, spec in stages.items():
        argv = spec["cmd"].split()
        assert argv[0] == "proxy3d" and argv[1] in cli.COMMANDS, spec["cmd"]
        if name.startswith("train_stage"):
            assert argv[1:4] == ["train", "--stage", name[-1]]
        elif name == "train_blind":
            assert argv[1:5] == ["train", "--stage", "4", "--blind"]
        else:
            assert argv[1] == name


def test_params_sections_exist_in_schema_and_params_yaml(stages: dict) -> None:
    params_yaml = yaml.safe_load((ROOT / "params.yaml").read_text())
    schema = set(Params.__dataclass_fields__)
    for name, spec in stages.items():
        sections = [p.split(".")[0] for p in spec.get("params", [])]
        assert sections, f"{name} lists no params"
        for s in sections:
            assert s in schema and s in params_yaml, f"{name}: params section {s!r} unknown"
    assert "proxies" in stages["proxies"]["params"] and "train_stage4" in stages["train_stage4"]["params"]


@pytest.mark.parametrize("stage", ORDER)
def test_params_sections_are_the_ones_the_stage_says_it_reads(stages: dict, stage: str,
                                                             capsys: pytest.CaptureFixture) -> None:
    """A section listed but not read reruns the stage for nothing (evaluate takes the model's settings from
    the checkpoint, not from params.yaml's model:); one read but not listed leaves its outputs stale."""
    argv = stages[stage]["cmd"].split()
    with pytest.raises(SystemExit):
        importlib.import_module(cli.COMMANDS[argv[1]][0]).main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    said = re.search(r"--params PARAMS params file \((.*?)\)", help_text).group(1)
    said = said.replace("<N>", argv[argv.index("--stage") + 1] if "--stage" in argv else "")
    read = {s for s in Params.__dataclass_fields__ if re.search(rf"\b{s}\b", said)}
    assert read == set(stages[stage]["params"]), f"{stage}: --help says {said!r}"


def test_artifact_deps_are_outputs_of_earlier_stages(stages: dict) -> None:
    produced: set[str] = set()
    for name, spec in stages.items():
        for dep in spec["deps"]:
            if dep.startswith("artifacts/"):
                assert dep in produced, f"{name} depends on {dep}, which no earlier stage writes"
        produced |= set(_paths(spec.get("outs")))
    assert "artifacts/checkpoints/stage3" in stages["train_stage4"]["deps"]
    assert "artifacts/proxies" in stages["train_stage4"]["deps"]
    assert "artifacts/checkpoints/stage4_blind" in stages["evaluate"]["deps"]


def test_metrics_are_uncached_json_under_metrics(stages: dict) -> None:
    for name, spec in stages.items():
        metrics = spec["metrics"]
        assert len(metrics) == 1
        (path, opts), = metrics[0].items()
        assert path == f"metrics/{'eval' if name == 'evaluate' else name}.json" and opts == {"cache": False}


def test_no_stage_writes_into_data(stages: dict) -> None:
    for spec in stages.values():
        for out in _paths(spec.get("outs")) + _paths(spec.get("metrics")) + _paths(spec.get("plots")):
            assert not out.startswith("data"), out


def test_metrics_are_not_git_ignored() -> None:
    """``dvc exp run`` commits the workspace's metrics into the experiment only if git sees them: with /metrics
    git-ignored, every experiment row of ``dvc exp show`` read '!'."""
    out = subprocess.run(["git", "check-ignore", "-q", "metrics/eval.json"], cwd=ROOT)
    assert out.returncode == 1, "metrics/ is git-ignored"


# Plumbing every stage shares (params schema, file helpers, tracking): listing it everywhere would rerun the
# whole pipeline on any edit; its own tests cover it.
SHARED = {"proxy3d", "proxy3d.config", "proxy3d.io", "proxy3d.types", "proxy3d.tracking", "proxy3d.dvcproc",
          "proxy3d.stages._common"}
# Imports a stage has but never reaches from its command: module -> why (the closure stops there).
UNREACHED = {
    "evaluate": {"proxy3d.scenes.scannet": "load_gt_boxes reads data/scenes only for `proxy3d score --boxes "
                 "data`; the stage passes objects.parquet"},
}
# Data files a module reads as package resources.
RESOURCES = {"proxy3d.vocab": ["proxy3d/resources/categories.txt"]}


def _module_file(module: str) -> Path | None:
    path = ROOT / Path(*module.split("."))
    for f in (path / "__init__.py", path.with_suffix(".py")):
        if f.is_file():
            return f
    return None


def _used_modules(module: str) -> set[str]:
    """proxy3d modules whose code ``module`` uses: ``from a.b import c`` uses a.b.c if that is a module, else
    a.b; imports inside functions count (stages import heavy libraries lazily)."""
    path = _module_file(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    used: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            used |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            used |= {f"{base}.{a.name}" if _module_file(f"{base}.{a.name}") else base for a in node.names}
    return {m for m in used if m.split(".")[0] == "proxy3d" and _module_file(m)}


@pytest.mark.parametrize("stage", ORDER)
def test_code_deps_cover_the_stages_import_closure(stages: dict, stage: str) -> None:
    """Editing a module a stage runs must rerun the stage: every proxy3d module reachable from the stage's
    command module (and the resources it reads) is under one of the stage's deps."""
    entry = cli.COMMANDS[stages[stage]["cmd"].split()[1]][0]
    stop = UNREACHED.get(stage, {})
    seen, todo = set(), [entry]
    while todo:
        module = todo.pop()
        if module not in seen and module not in stop:
            seen.add(module)
            todo.extend(_used_modules(module))
    files = [str(_module_file(m).relative_to(ROOT)) for m in seen - SHARED]
    files += [r for m in seen for r in RESOURCES.get(m, [])]
    deps = [d.rstrip("/") for d in stages[stage]["deps"]]
    missing = sorted(f for f in files if not any(f == d or f.startswith(f"{d}/") for d in deps))
    assert not missing, f"dvc.yaml stage {stage!r} runs code it does not list in deps: {missing}"


def test_bytecode_is_dvcignored() -> None:
    assert "__pycache__/" in (ROOT / ".dvcignore").read_text()


# --- behaviour on a throwaway DVC project --------------------------------------------------------------

def dvc(project: Path, *args: str) -> str:
    out = subprocess.run([DVC, *args], cwd=project, capture_output=True, text=True, timeout=120,
                         env={**_env(), "PROXY3D_TRACKING": "0"})
    assert out.returncode == 0, f"dvc {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = demo_project.create(tmp_path_factory.mktemp("toy") / "proj")
    dvc(project, "repro")
    return project


def test_noop_repro_runs_nothing(toy: Path) -> None:
    """An up-to-date project reruns no stage and rewrites neither outputs nor dvc.lock (how fast that is, is a
    benchmark's business, not a unit test's)."""
    files = [toy / "dvc.lock", *sorted((toy / "out").iterdir()), *sorted((toy / "metrics").iterdir())]
    before = {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files}
    out = dvc(toy, "repro")
    assert "didn't change, skipping" in out and "Running stage" not in out
    assert {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files} == before


def test_param_change_reruns_only_downstream(toy: Path) -> None:
    params = toy / "params.yaml"
    original = params.read_text()
    try:
        params.write_text(original.replace("budget: 700", "budget: 500"))
        out = dvc(toy, "repro")
        assert "Running stage 'prepare'" not in out
        assert "Running stage 'proxies'" in out and "Running stage 'evaluate'" in out
        assert json.loads((toy / "metrics/proxies.json").read_text())["tokens_per_scene"] == 500
    finally:
        params.write_text(original)
        dvc(toy, "repro")


def test_exp_run_set_param_and_exp_show_metrics(toy: Path) -> None:
    out = dvc(toy, "exp", "run", "-S", "proxies.budget=450")
    assert "Running stage 'proxies'" in out
    rows = json.loads(dvc(toy, "exp", "show", "--json"))
    found = []
    for commit in rows:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                budget = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("proxies", {}).get("budget")
                metric = data.get("metrics", {}).get("metrics/proxies.json", {}).get("data", {})
                found.append((budget, metric.get("tokens_per_scene")))
    assert (450, 450) in found, found

"""User errors at the command line: each is refused before work is done (or anything is deleted), in one line
that names the value, where it came from and the fix, with no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy3d import cli
from proxy3d.config import ParamsError, ProxiesParams, load_params
from proxy3d.tokenizer.synthetic import make_triplets
from proxy3d.types import load_triplets, save_triplets


def _one_line_error(capsys: pytest.CaptureFixture, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"proxy3d {command}: error: "), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def triplets_file(tmp_path: Path) -> Path:
    path = tmp_path / "trip" / "scene0000_00.safetensors"
    save_triplets(make_triplets(300, 8, seed=1, scene_id="scene0000_00"), path)
    return path


# 1. spacespan --out must never delete data that is not SpaceSpan's own output

def _layout(root: Path, marker: str = "old") -> Path:
    (root / "records" / "curriculum_stage=1").mkdir(parents=True)
    (root / "records" / "curriculum_stage=1" / "part-00000.parquet").write_text(marker)
    (root / "quarantine").mkdir()
    (root / "objects.parquet").write_text(marker)
    return root


def test_spacespan_out_that_is_or_holds_the_data_root_is_refused_before_anything_runs(tmp_path: Path) -> None:
    from proxy3d.config import SpaceSpanParams
    from proxy3d.stages.spacespan import run
    from proxy3d.tracking import NullTracker

    data = tmp_path / "data"
    (data / "annotations").mkdir(parents=True)
    raw = data / "annotations" / "raw.json"
    raw.write_text("[]")
    for out in (data, tmp_path, Path(os.path.relpath(data))):
        with pytest.raises(ValueError, match=r"--out .*data root"):
            run(SpaceSpanParams(), data, out, NullTracker())
    assert raw.read_text() == "[]"


def test_spacespan_swap_replaces_only_a_spacespan_output_folder(tmp_path: Path) -> None:
    from proxy3d.spacespan.job import _swap

    out = tmp_path / "out"
    out.mkdir()
    (out / "scene.sens").write_text("raw")
    refused = r"--out .* is not a SpaceSpan output folder \(it holds scene.sens\)"
    with pytest.raises(ValueError, match=refused):
        _swap(_layout(tmp_path / "new1", "new"), out)
    assert (out / "scene.sens").read_text() == "raw"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new1", "out"]

    old = _layout(tmp_path / "old")
    _swap(_layout(tmp_path / "new2", "new"), old)
    assert (old / "objects.parquet").read_text() == "new" and not (tmp_path / "new2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new1", "old", "out"]  # no .old left behind


def test_spacespan_staging_folders_are_unique_per_run(tmp_path: Path) -> None:
    from proxy3d.spacespan.job import _staging

    out = tmp_path / "sub" / "spacespan"
    a, b = _staging(out), _staging(out)
    assert a != b and a.parent == b.parent == out.parent and a.is_dir() and b.is_dir()
    assert a.name.startswith(".spacespan.") and not out.exists()
    # made with the process umask like any folder (tempfile.mkdtemp's 0700 would become the output's mode)
    umask = os.umask(0)
    os.umask(umask)
    assert a.stat().st_mode & 0o777 == 0o777 & ~umask


# 2. params and safetensors errors are one-line CLI errors naming the file

def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("proxies:\n  budget: [\n")
    assert cli.main(["proxies", "--params", str(bad)]) == 1
    err = _one_line_error(capsys, "proxies")
    assert f"{bad}: not valid YAML (line 3" in err


def test_a_params_file_that_is_not_text_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "bin.yaml"
    f.write_bytes(b"\xff\xfe bad")
    with pytest.raises(ParamsError, match=f"{f}: not a UTF-8 text file"):
        load_params(f)


@pytest.mark.parametrize("content, message", [
    (b"", "header too small"), (b"\x08\x00\x00\x00\x00\x00\x00\x00{", "deserializing header")])
def test_a_broken_safetensors_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       content: bytes, message: str) -> None:
    f = tmp_path / "e.safetensors"
    f.write_bytes(content)
    with pytest.raises(ValueError, match=f"{f}: not a valid triplets safetensors file .*{message}.*re-run"):
        load_triplets(f)
    assert cli.main(["tokenize", str(f), "--out", str(tmp_path / "o")]) == 1
    assert str(f) in _one_line_error(capsys, "tokenize")


def test_a_folder_named_like_a_safetensors_file_is_a_one_line_error(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "in" / "d.safetensors").mkdir(parents=True)
    assert cli.main(["tokenize", str(tmp_path / "in"), "--out", str(tmp_path / "o")]) == 1
    assert f"{tmp_path / 'in' / 'd.safetensors'} is a folder" in _one_line_error(capsys, "tokenize")


@pytest.mark.parametrize("meta", ["{not json", "5", "\"text\""])
def test_bad_json_metadata_names_the_file(tmp_path: Path, meta: str) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    f = tmp_path / "m.safetensors"
    save_file({"features": np.zeros((2, 2), np.float32)}, str(f), metadata={"json": meta})
    with pytest.raises(ValueError, match=f"{f}: not a valid triplets safetensors file"):
        load_triplets(f)


def test_os_errors_are_one_line_cli_errors(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    from proxy3d.stages import tokenize_cli

    def denied(argv: list[str] | None = None) -> int:
        raise PermissionError(13, "Permission denied", "out/x.safetensors")

    monkeypatch.setattr(tokenize_cli, "main", denied)
    assert cli.main(["tokenize", "x"]) == 1
    assert "Permission denied: 'out/x.safetensors'" in _one_line_error(capsys, "tokenize")


# 3. output files are checked before the stage runs

def test_output_file_options_are_checked_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    empty = tmp_path / "no_triplets"
    empty.mkdir()
    cases = [(["proxies", "--triplets", str(empty), "--metrics", "folder"], "--metrics folder is a folder"),
             (["proxies", "--triplets", str(empty), "--plot", "file.txt/p.png"],
              "--plot file.txt/p.png: file.txt is a file"),
             (["evaluate", "--report", "folder"], "--report folder is a folder"),
             (["evaluate", "--predictions", "file.txt/p.json"],
              "--predictions file.txt/p.json: file.txt is a file"),
             (["evaluate", "--plots", "file.txt"], "--plots file.txt is a file")]
    for argv, message in cases:
        assert cli.main(argv) == 1
        assert message in _one_line_error(capsys, argv[0])


# 4. --params of the tools: a missing file or a folder is an error, not the built-in defaults

def test_synth_and_import_refuse_a_missing_params_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    from proxy3d.scenes import synth_cli

    def never(*a, **k):
        raise AssertionError("generated a dataset with the built-in defaults")

    monkeypatch.setattr(synth_cli, "generate_dataset", never)
    missing = tmp_path / "nope.yaml"
    assert cli.main(["synth", "data", "--out", str(tmp_path / "d"), "--params", str(missing)]) == 1
    assert f"--params {missing}: no such file" in _one_line_error(capsys, "synth")
    assert cli.main(["import-scannet", str(tmp_path / "x.sens"), "--params", str(missing)]) == 1
    assert f"--params {missing}: no such file" in _one_line_error(capsys, "import-scannet")


def test_params_that_is_a_folder_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["proxies", "--params", str(tmp_path)]) == 1
    assert f"--params {tmp_path} is a folder" in _one_line_error(capsys, "proxies")


# 5. a zero budget is refused

def test_zero_budget_in_params_is_refused(tmp_path: Path, triplets_file: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    from proxy3d.tokenizer import ProxyTokenizer

    b0 = tmp_path / "b0.yaml"
    b0.write_text("proxies:\n  budget: 0\n")
    assert cli.main(["tokenize", str(triplets_file), "--out", str(tmp_path / "o"), "--params", str(b0)]) == 1
    err = _one_line_error(capsys, "tokenize")
    assert f"{b0}: proxies.budget=0" in err and ">= 1" in err and not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="proxies.budget must be >= 1"):
        ProxyTokenizer.from_params(ProxiesParams(budget=0))
    with pytest.raises(ParamsError, match=r"override proxies.eval_budgets=\[0,450\]"):
        load_params(tmp_path / "missing.yaml", ["proxies.eval_budgets=[0,450]"])


# 6 and 7. proxy3d runs: fail fast on an unreachable server or a missing store; -n must be positive

def _runs(uri: str, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    env.update(MLFLOW_TRACKING_URI=uri, PROXY3D_TRACKING="1")
    return subprocess.run([sys.executable, "-m", "proxy3d.cli", "runs", *argv], env=env, capture_output=True,
                          text=True, timeout=60)


def test_runs_with_an_unreachable_server_fails_fast() -> None:
    # MLflow's default retries kept this going for minutes (the subprocess timeout in _runs is the hang guard;
    # no wall-clock limit here: timings belong in bench/)
    r = _runs("http://127.0.0.1:9", "list")
    assert r.returncode == 1 and "Retrying" not in r.stderr, r.stderr
    assert r.stderr.startswith("proxy3d runs: error: ") and "127.0.0.1:9" in r.stderr
    assert "Traceback" not in r.stderr


def test_runs_with_a_missing_sqlite_store_creates_nothing(tmp_path: Path) -> None:
    for db in (tmp_path / "missing.db", tmp_path / "nodir" / "x.db"):
        r = _runs(f"sqlite:///{db}", "list")
        assert r.returncode == 1 and f"no such database file {db}" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and not db.exists()


@pytest.mark.parametrize("n", ["0", "-1"])
def test_runs_n_must_be_positive(n: str, capsys: pytest.CaptureFixture) -> None:
    for cmd in ("list", "compare"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["runs", cmd, "-n", n])
        assert exit_.value.code == 2 and f"{n} is not a positive integer" in capsys.readouterr().err


# 8. errors name what is wrong and where it came from

@pytest.mark.parametrize("text, message", [
    ("proxies: 5\n", "section 'proxies' must be a mapping of keys"),
    ("- a\n- b\n", "must be a mapping of sections"),
    ("spacespan:\n  sources: 5\n", "section 'spacespan.sources' must be a mapping of keys")])
def test_a_section_that_is_not_a_mapping_is_named(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(text)
    with pytest.raises(ParamsError, match=f"{f}: .*{message}"):
        load_params(f)


def test_triplets_scene_ids_are_validated_before_any_work(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy3d.config import DataParams, PerceptionParams
    from proxy3d.stages import triplets
    from proxy3d.tracking import NullTracker

    def never(*a, **k):
        raise AssertionError("built the encoder before checking --scenes")

    monkeypatch.setattr(triplets, "builder_from_params", never)
    with pytest.raises(ValueError, match=r"scene id '\.\./evil' \(from --scenes\)"):
        triplets.run(PerceptionParams(), DataParams(), tmp_path / "scenes", tmp_path / "out", NullTracker(),
                     ["scene0000_00", "../evil"])


# 10. --help shows defaults

def test_help_shows_defaults(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli.main(["proxies", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: artifacts/triplets)" in out and "(default: reports/proxies_budget.png)" in out
    assert "(default: None)" not in out and "(default: False)" not in out
    with pytest.raises(SystemExit):
        cli.main(["runs", "list", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "List the newest top-level runs" in out


# 11. two triplets files of one scene

def test_two_triplets_files_of_one_scene_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in"
    for name in ("a", "b"):
        save_triplets(make_triplets(200, 8, seed=2, scene_id="scene0000_00"), src / f"{name}.safetensors")
    assert cli.main(["tokenize", str(src), "--out", str(tmp_path / "o")]) == 1
    err = _one_line_error(capsys, "tokenize")
    assert f"{src / 'a.safetensors'} and {src / 'b.safetensors'} both hold scene 'scene0000_00'" in err
    assert not (tmp_path / "o").exists()


# 12. import-scannet --frames

def test_import_refuses_negative_frames(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["import-scannet", str(tmp_path / "x.sens"), "--frames", "-1"])
    assert exit_.value.code == 2 and "--frames -1" in capsys.readouterr().err


# range checks of params

@pytest.mark.parametrize("override, key", [
    ("spacespan.val_fraction=1.5", "spacespan.val_fraction"),
    ("synth.val_fraction=-0.1", "synth.val_fraction"),
    ("train_stage2.steps=0", "train_stage2.steps"), ("train_stage4.batch_size=0", "train_stage4.batch_size"),
    ("train_stage1.lr=0", "train_stage1.lr"), ("train_stage3.lr=-1e-3", "train_stage3.lr"),
    ("data.frames=-1", "data.frames"), ("evaluate.budgets=[0]", "evaluate.budgets")])
def test_out_of_range_params_name_the_key(tmp_path: Path, override: str, key: str) -> None:
    with pytest.raises(ParamsError, match=f"override {key}="):
        load_params(tmp_path / "missing.yaml", [override])
    f = tmp_path / "p.yaml"
    section, name = key.split(".")
    f.write_text(f"{section}:\n  {name}: {override.split('=')[1]}\n")
    with pytest.raises(ParamsError, match=f"{f}: {key}="):
        load_params(f)

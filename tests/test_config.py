from pathlib import Path

import pytest
import yaml

from proxy3d.config import Params, ParamsError, load_params, section_dict


def test_committed_params_yaml_loads_and_matches_schema(repo_root: Path) -> None:
    p = load_params(repo_root / "params.yaml")
    assert isinstance(p, Params)
    assert p.proxies.budget > 0


def test_committed_params_yaml_lists_every_default(repo_root: Path) -> None:
    """params.yaml spells out every key so `dvc exp run -S` and DVC's params tracking see all of them."""
    on_disk = yaml.safe_load((repo_root / "params.yaml").read_text())
    defaults = section_dict(Params())
    assert set(on_disk) == set(defaults)
    for name, section in defaults.items():
        if isinstance(section, dict):
            assert set(on_disk[name]) == set(section), name


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    f = tmp_path / "params.yaml"
    f.write_text("proxies:\n  budgett: 700\n")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    assert "budgett" in str(e.value) and str(f) in str(e.value)


def test_wrong_type_names_key_and_file(tmp_path: Path) -> None:
    f = tmp_path / "params.yaml"
    f.write_text("proxies:\n  budget: lots\n")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    assert "budget" in str(e.value) and str(f) in str(e.value)


def test_overrides_apply_and_are_typed(tmp_path: Path) -> None:
    p = load_params(tmp_path / "missing.yaml", ["proxies.budget=450", "proxies.method=fps"])
    assert p.proxies.budget == 450 and p.proxies.method == "fps"
    with pytest.raises(ParamsError):
        load_params(tmp_path / "missing.yaml", ["proxies.budget=abc"])


@pytest.mark.parametrize("command", [["spacespan"], ["symbols"], ["triplets"], ["proxies"],
                                     ["train", "--stage", "1"], ["evaluate"]])
def test_a_params_file_that_does_not_exist_is_an_error_not_the_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        command: list[str]) -> None:
    from proxy3d import cli

    monkeypatch.chdir(tmp_path)  # were the check gone, the stage would run on defaults here, not in the repo
    monkeypatch.setenv("PROXY3D_TRACKING", "0")
    missing = tmp_path / "nope.yaml"
    assert cli.main([*command, "--params", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"proxy3d {command[0]}: error: --params {missing}: no such file" in err
    assert len(err.splitlines()) == 1


def test_without_params_a_missing_params_yaml_means_the_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from proxy3d.stages._common import params_file

    monkeypatch.chdir(tmp_path)
    assert params_file(None) == Path("params.yaml") and "using the built-in defaults" in caplog.text
    (tmp_path / "mine.yaml").write_text("proxies: {budget: 450}\n")
    assert load_params(params_file("mine.yaml")).proxies.budget == 450

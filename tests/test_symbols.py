"""Symbol and identifier maps: complete manifest, determinism, resumability, distinct images, errors."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from proxy3d.config import SymbolsParams
from proxy3d.stages import symbols as stage
from proxy3d.symbols import SymbolRenderer, render, render_maps
from proxy3d.vocab import categories


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.png"))}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, dict, dict]:
    out = tmp_path_factory.mktemp("symbols")
    manifest, metrics = render_maps(SymbolsParams(), out)
    return out, manifest, metrics


def test_manifest_lists_every_file_with_hash(rendered):
    out, manifest, metrics = rendered
    assert len(manifest["symbols"]) == 213 and len(manifest["identifiers"]) == 100
    assert [e["category"] for e in manifest["symbols"]] == list(categories())
    for e in manifest["symbols"]:
        assert e["file"] == f"symbols/{e['category_id']:03d}.png" and e["seed"] == e["category_id"]
        assert e["prompt"] == f"a simple flat icon of a {e['category']}, white background"
    assert [e["token"] for e in manifest["identifiers"]] == [f"<OBJ{i:03d}>" for i in range(100)]
    for e in manifest["symbols"] + manifest["identifiers"]:
        assert hashlib.sha256((out / e["file"]).read_bytes()).hexdigest() == e["sha256"]
        assert Image.open(out / e["file"]).size == (28, 28)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert len(_files(out)) == 313
    assert metrics["symbols_rendered"] == 213 and metrics["identifiers_rendered"] == 100


def test_a_second_run_gives_the_same_bytes(rendered, tmp_path):
    """A fresh renderer (new pipeline, same seed) reproduces the files byte for byte (a spread of 24)."""
    out, manifest, _ = rendered
    renderer = SymbolRenderer(SymbolsParams(), tmp_path)
    for e in manifest["symbols"][::9]:
        assert renderer.render_symbol(e["category_id"], e["category"]) == (out / e["file"]).read_bytes(), e["file"]
    for e in manifest["identifiers"]:
        assert render.png_bytes(render.identifier_image(e["id"], 28), 28) == (out / e["file"]).read_bytes()


def test_two_full_runs_give_the_same_bytes(rendered, tmp_path):
    out, _, _ = rendered
    render_maps(SymbolsParams(), tmp_path)
    assert _files(tmp_path) == _files(out)
    assert (tmp_path / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()


def test_each_icon_shows_its_own_category(rendered):
    """Random-init SD output carries no semantics; the blended glyph must make every icon identify its
    category: its nearest (by correlation) clean glyph is its own, for all 213 (chance: 1/213)."""
    out, manifest, _ = rendered

    def unit(x: np.ndarray) -> np.ndarray:
        x = x.reshape(len(x), -1) - x.reshape(len(x), -1).mean(1, keepdims=True)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    icons = np.stack([np.asarray(Image.open(out / e["file"]), dtype=np.float32) for e in manifest["symbols"]])
    glyphs = np.stack([np.asarray(Image.open(io.BytesIO(render.png_bytes(render.glyph(cid, c, 64), 28))),
                                  dtype=np.float32) for cid, c in enumerate(categories())])
    nearest = (unit(icons) @ unit(glyphs).T).argmax(1)
    assert (nearest == np.arange(213)).all()
    assert len({e["sha256"] for e in manifest["symbols"]}) == 213


def test_identifier_images_differ(rendered):
    out, manifest, _ = rendered
    imgs = [np.asarray(Image.open(out / e["file"]).convert("L"), dtype=np.int16) for e in manifest["identifiers"]]
    assert len({e["sha256"] for e in manifest["identifiers"]}) == 100
    assert min(np.abs(imgs[i] - imgs[j]).sum() for i in range(100) for j in range(i + 1, 100)) > 100
    assert all(img.min() < 80 and img.max() > 200 for img in imgs)  # dark digits on a light background


def test_rerun_skips_and_corrupted_file_is_rendered_again(rendered, tmp_path):
    out, _, _ = rendered
    work = tmp_path / "maps"
    for name, data in _files(out).items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(data)
    (work / "manifest.json").write_bytes((out / "manifest.json").read_bytes())
    renderer = SymbolRenderer(SymbolsParams(), work)
    renderer.run()
    assert (renderer.stats.symbols_skipped, renderer.stats.identifiers_skipped) == (213, 100)
    assert renderer._pipe is None  # nothing to render: the SD pipeline is never built
    (work / "symbols/017.png").write_bytes(b"not a png")
    (work / "identifiers/042.png").unlink()
    renderer = SymbolRenderer(SymbolsParams(), work)
    renderer.run()
    assert (renderer.stats.symbols_rendered, renderer.stats.identifiers_rendered) == (1, 1)
    assert _files(work) == _files(out)
    # files made for other categories (categories.txt reordered since): intact, but not reused for a new entry
    m = json.loads((work / "manifest.json").read_text())
    for k in ("category", "prompt"):
        m["symbols"][0][k], m["symbols"][1][k] = m["symbols"][1][k], m["symbols"][0][k]
    (work / "manifest.json").write_text(json.dumps(m))
    renderer = SymbolRenderer(SymbolsParams(), work)
    renderer.run()
    assert (renderer.stats.symbols_rendered, renderer.stats.symbols_skipped) == (2, 211)
    assert _files(work) == _files(out)


def test_changed_settings_render_again(rendered, tmp_path):
    out, _, _ = rendered
    for name, data in _files(out).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (tmp_path / "manifest.json").write_bytes((out / "manifest.json").read_bytes())
    manifest, metrics = render_maps(SymbolsParams(num_identifiers=3, icon_size=16, glyph="off"), tmp_path)
    assert (metrics["symbols_rendered"], metrics["identifiers_rendered"]) == (213, 3)
    assert len(manifest["identifiers"]) == 3 and not manifest["glyph_blended"]
    assert Image.open(tmp_path / "symbols/000.png").size == (16, 16)


def test_stage_main_writes_metrics(rendered, tmp_path):
    out, _, _ = rendered
    metrics_path = tmp_path / "metrics" / "symbols.json"
    (tmp_path / "empty.yaml").write_text("")  # the built-in defaults (a missing --params file is an error)
    rc = stage.main(["--params", str(tmp_path / "empty.yaml"), "--out", str(out), "--metrics", str(metrics_path)])
    metrics = json.loads(metrics_path.read_text())
    assert rc == 0 and metrics["symbols"] == 213 and metrics["symbols_skipped"] == 213


@pytest.mark.parametrize("make", [lambda d: d / "nope", lambda d: d])
def test_missing_checkpoint_is_a_clear_error(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"symbols\.pipeline.*(does not exist|no model_index\.json)"):
        render_maps(SymbolsParams(pipeline=str(path)), tmp_path / "out")


@pytest.mark.parametrize("field, value, key", [("num_identifiers", 101, "num_identifiers"),
                                               ("render_size", 60, "render_size"),
                                               ("prompt", "an icon", "prompt"), ("glyph", "maybe", "glyph")])
def test_bad_params_name_the_key(tmp_path, field, value, key):
    with pytest.raises(ValueError, match=rf"symbols\.{key}"):
        render_maps(SymbolsParams(**{field: value}), tmp_path)


class _Killed(SymbolRenderer):
    """Stops like a killed process after rendering identifier ``stop_at - 1``."""

    stop_at = 70

    def _render_entry(self, kind, entry):
        if kind == "identifiers" and entry["id"] == self.stop_at:
            raise KeyboardInterrupt
        return super()._render_entry(kind, entry)


def test_interrupted_run_resumes_from_the_partial_manifest(rendered, tmp_path):
    out, _, _ = rendered
    for name, data in _files(out).items():
        if name.startswith("symbols/"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes(data)
    (tmp_path / "manifest.json").write_bytes((out / "manifest.json").read_bytes())
    with pytest.raises(KeyboardInterrupt):
        _Killed(SymbolsParams(), tmp_path).run()
    partial = json.loads((tmp_path / "manifest.json").read_text())
    assert (len(partial["symbols"]), len(partial["identifiers"])) == (213, 64)  # flushed every 32 renders
    renderer = SymbolRenderer(SymbolsParams(), tmp_path)
    renderer.run()
    assert (renderer.stats.identifiers_skipped, renderer.stats.identifiers_rendered) == (64, 36)
    assert renderer.stats.symbols_skipped == 213 and _files(tmp_path) == _files(out)

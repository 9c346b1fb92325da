"""bench/nearest.py: fresh layouts with the right nearest object, short runs, attention supervision and the pointer."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from proxy3d.config import ModelParams
from proxy3d.model import text_tokenizer as tt
from proxy3d.model.build import create_model, save_model_dir
from proxy3d.train.loop import TEMPLATE_TEXT
from proxy3d.vocab import categories

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_nearest", ROOT / "bench" / "nearest.py")
nearest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nearest)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = tt.build_text_tokenizer([TEMPLATE_TEXT, " ".join(categories())], 512)
    torch.manual_seed(0)
    mp = ModelParams()
    model = create_model(mp, tok, None)
    return save_model_dir(model, tok, tmp_path_factory.mktemp("nearest") / "stage1", {"stage": 1, "model": asdict(mp)})


def test_layouts_ask_about_one_object_and_answer_its_nearest_other() -> None:
    rng = np.random.default_rng(3)
    for n in (2, 5, 12):
        ex, a, b = nearest.layout(rng, n, None)
        c, ids = np.asarray(ex.scene.centers), np.asarray(ex.scene.instance)
        d = np.linalg.norm(c - c[ids == a][0], axis=1)
        assert len(ex.scene) == n and a != b and a in ids
        assert d[ids == b][0] == np.sort(d)[1]  # the second smallest: the first is a itself
        prompt, answer = ex.turns[0]
        assert f"<OBJ{a:03d}>" in prompt and answer.endswith(f"<OBJ{b:03d}>")
    assert nearest.layout(rng, 3, "closest {a} {b}")[0].turns[0][1].startswith("closest <OBJ")


def test_warmup_grows_the_layouts_and_bad_ranges_are_refused() -> None:
    sizes = [nearest.objects_at(s, 100, 2, 12) for s in range(100)]
    assert sizes[0] == 2 and sizes[-1] == 12 and sizes == sorted(sizes) and sizes[60] == 12
    assert nearest.object_range("2-12") == (2, 12) and nearest.object_range("5") == (5, 5)
    for bad in ("1", "9-3", "x"):
        with pytest.raises(SystemExit, match="--objects"):
            nearest.object_range(bad)


def test_a_short_run_prints_rows_with_accuracy_chance_and_their_ratio(checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = nearest.main(["--checkpoint", str(checkpoint), "--objects", "2-4", "--steps", "4", "--batch", "2",
                        "--eval-every", "2", "--eval-items", "6", "--fourier-init", "1", "--attn-aux", "1",
                        "--fourier-sigma", "0.2", "--direct", "1", "--json",
                        str(tmp_path / "n.json")])
    rows = out["rows"]
    assert [r["step"] for r in rows] == [2, 4] and (tmp_path / "n.json").exists()
    for r in rows:
        assert 0.0 <= r["nearest"] <= r["in_scene"] + 1e-9 <= 1.0 + 1e-9
        assert r["chance"] == pytest.approx(1 / 3) and r["ratio"] == pytest.approx(r["nearest"] * 3)
        assert np.isfinite(r["loss"]) and r["attn_aux"] > 0.0  # -log of a probability below 1
    assert "nearest" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="bundle.json"):
        nearest.main(["--checkpoint", str(tmp_path / "missing")])


def test_attention_supervision_reads_the_probability_paid_to_the_nearest_proxy(checkpoint: Path) -> None:
    from proxy3d.model.build import load_model_dir
    from proxy3d.model.inputs import TextCodec

    model, tok, _ = load_model_dir(checkpoint)
    probe = nearest.AttentionProbe(model, 1)
    items = [nearest.layout(np.random.default_rng(s), 5, None) for s in range(3)]
    batch = TextCodec(tok, tt.proxy_token_id(tok)).collate([e for e, _, _ in items], 96)
    obj_ids = torch.tensor(model.obj_token_ids)
    with torch.no_grad():
        model.logits(batch.input_ids, batch.attention_mask, batch.scenes)
        loss = probe.loss(batch, items, 2, obj_ids)
    w = probe.weights
    assert w.shape[:2] == (3, model.vlm.config.text_config.num_attention_heads)
    ex, _, b = items[0]
    t = int((batch.labels[0] == obj_ids[b]).nonzero()[-1]) - 1
    assert float(w[0, 2, t].sum()) == pytest.approx(1.0, abs=1e-4)  # probabilities over the keys, not scores
    proxy = int(np.flatnonzero(np.asarray(ex.scene.instance) == b)[0])
    assert 0.0 < float(w[0, 2, t, proxy]) < 1.0 and float(loss) > 0.0
    with pytest.raises(SystemExit, match="--attn-layer"):
        nearest.AttentionProbe(model, 99)


def test_pointer_runs_from_a_fresh_model_report_the_pointers_accuracy(checkpoint: Path) -> None:
    out = nearest.main(["--checkpoint", str(checkpoint), "--fresh", "--symbols", "none", "--objects", "3",
                        "--steps", "2", "--batch", "2", "--eval-every", "2", "--eval-items", "4", "--pointer", "1",
                        "--pointer-lr", "1e-3", "--pointer-logits"])
    r = out["rows"][-1]
    assert 0.0 <= r["pointer"] <= 1.0 and np.isfinite(r["loss"])
    assert np.isnan(nearest.main(["--checkpoint", str(checkpoint), "--steps", "1", "--batch", "1",
                                  "--eval-items", "2"])["rows"][-1]["pointer"])  # no pointer, nothing to report
    with pytest.raises(SystemExit, match="--freeze trains the pointer head alone"):
        nearest.main(["--checkpoint", str(checkpoint), "--freeze", "all"])
    with pytest.raises(SystemExit, match="--symbols"):
        nearest.main(["--checkpoint", str(checkpoint), "--fresh", "--symbols", str(checkpoint / "nowhere")])

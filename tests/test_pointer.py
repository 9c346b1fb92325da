"""Stage 2's nearest-object machinery: the pointer head, the position on identifier tokens, F's re-init, and the
pointer phase of the stage-2 training loop (only the head moves; a killed phase resumes to the same weights)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_model import greedy_by_recomputing
from test_train import _params, _weights

from proxy3d.config import ModelParams
from proxy3d.model import text_tokenizer as tt
from proxy3d.model.build import create_model, load_model_dir, save_model_dir
from proxy3d.model.inputs import Example, SceneInput, TextCodec
from proxy3d.tracking import NullTracker
from proxy3d.train.data import CurriculumData, load_objects, load_rows, nearest_other
from proxy3d.train.loop import StagePaths, check_xy_pe_init, train_stage
from proxy3d.train.toy import write_toy_inputs

ROOM = 6.0


@pytest.fixture()
def model_tok():
    torch.manual_seed(0)
    tok = tt.build_text_tokenizer(["Which object is closest to the chair? Answer: chair lamp sofa"] * 20, 400)
    model = create_model(ModelParams(), tok, None)
    model.pe.fourier.reinit(0.1, 2.0, torch.Generator().manual_seed(1))
    return model, tok, TextCodec(tok, tt.proxy_token_id(tok))


def _scene() -> SceneInput:
    # object 7 has two proxies, object 3 one, one proxy names no identifier (-1), one an id past the 100
    return SceneInput.from_objects(np.array([7, 7, 3, -1, 150]), np.array([1, 1, 2, 0, 4]),
                                   np.array([[0, 0, 0], [1, 0, 0], [3, 3, 1.0], [2, 2, 0], [4, 1, 0]]))


def test_fourier_reinit_gives_room_scale_frequencies_and_the_asked_spread() -> None:
    from proxy3d.model.pe import FourierXY

    f = FourierXY(32, 16)
    assert float(f(torch.rand(10, 2)).detach().abs().max()) == 0.0  # zero-init: F adds nothing until it is trained or re-init
    f.reinit(0.1, 2.0, torch.Generator().manual_seed(0))
    assert float(f.B.std()) == pytest.approx(0.1, rel=1e-5)
    with torch.no_grad():
        out = f(torch.rand(4000, 2) * ROOM)
    assert float((out - out.mean(0)).norm(dim=1).mean()) == pytest.approx(2.0, rel=0.1)
    for bad in ([0.1, 0], [-1, 2], [0.1], "x"):
        with pytest.raises(ValueError, match="xy_pe_init"):
            check_xy_pe_init(bad, 2)
    assert check_xy_pe_init([0, 0], 2) == (0.0, 0.0)


def test_identifier_tokens_carry_their_objects_position_and_nothing_else_moves(model_tok) -> None:
    model, _, codec = model_tok
    scene = _scene()
    b = codec.collate([Example(scene, [("Which object is closest to <OBJ007>?", "<OBJ007> <OBJ003> <OBJ050>")])], 96)
    with torch.no_grad():
        moved = model.embed(b.input_ids, b.scenes)
        model.direct_position = 0.0
        plain = model.embed(b.input_ids, b.scenes)
        model.direct_position = 0.5
        half = model.embed(b.input_ids, b.scenes)
        f = model.pe.fourier(torch.tensor([[0.5, 0.0], [3.0, 3.0]]))  # 7: mean of its two proxies; 3
    ids = b.input_ids[0]
    lookup = model.obj_lookup[ids]
    changed = (moved - plain).abs().sum(-1)[0] > 0
    assert changed.tolist() == ((lookup == 7) | (lookup == 3)).tolist()  # <OBJ050> is not in the scene
    t7, t3 = (int((lookup == m).nonzero()[0]) for m in (7, 3))
    torch.testing.assert_close(moved[0, t7] - plain[0, t7], f[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(moved[0, t3] - plain[0, t3], f[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(half - plain, 0.5 * (moved - plain), atol=1e-5, rtol=0)


def test_pointer_adds_each_objects_best_proxy_score_to_its_identifier_logit_only(model_tok) -> None:
    model, _, codec = model_tok
    b = codec.collate([Example(_scene(), [("Which?", "<OBJ003>")])], 96)
    head = model.ensure_pointer()
    with torch.no_grad():
        head.q.weight.add_(0.1 * torch.randn_like(head.q.weight))  # off the identity: scores not symmetric
        model.pointer_mode = "off"
        plain, h = model.outputs(b.input_ids, b.attention_mask, b.scenes)
        model.pointer_mode = "on"
        joined, _ = model.outputs(b.input_ids, b.attention_mask, b.scenes)
    proxies = h[0, b.input_ids[0] == model.proxy_token_id]
    s = head.q(h[0]) @ head.k(proxies).T / model.dim**0.5  # (L, 5)
    obj = torch.tensor(model.obj_token_ids)
    diff = (joined - plain)[0]
    torch.testing.assert_close(diff[:, obj[7]], s[:, :2].max(1).values, atol=1e-5, rtol=0)
    torch.testing.assert_close(diff[:, obj[3]], s[:, 2], atol=1e-5, rtol=0)
    others = torch.ones(diff.shape[-1], dtype=torch.bool)
    others[obj[[3, 7]]] = False
    assert float(diff[:, others].abs().max()) == 0.0  # other identifiers, words, the unnamed proxies: nothing


def test_pointer_only_mode_trains_the_head_alone(model_tok) -> None:
    model, _, codec = model_tok
    model.ensure_pointer()
    model.pointer_mode = "only"
    b = codec.collate([Example(_scene(), [("Which object is closest to <OBJ007>?", "<OBJ007> <OBJ003>")])], 96)
    model(b.input_ids, b.attention_mask, b.labels, b.scenes).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and float(g.abs().sum()) > 0 for n, g in grads.items() if n.startswith("pointer."))
    assert all(g is None for n, g in grads.items() if not n.startswith("pointer."))


def test_decoding_with_the_pointer_equals_recomputing_the_whole_sequence(model_tok, tmp_path: Path) -> None:
    model, tok, codec = model_tok
    torch.manual_seed(3)
    head = model.ensure_pointer()
    with torch.no_grad():
        model.refs.id_offset.add_(torch.randn_like(model.refs.id_offset))
        head.k.weight.mul_(20.0)  # strong scores: decoding picks scene identifiers through the head
    scenes = [_scene(), SceneInput.from_objects(np.array([1, 2, 3]), np.array([0, 1, 2]), np.random.default_rng(0).random((3, 3)) * 5)]
    b = codec.prompts(scenes, ["Which object is closest to <OBJ007>?", "Which object is closest to <OBJ002>?"])
    out = model.generate_ids(b.input_ids, b.attention_mask, b.scenes, 4, eos_token_id=-1, pad_token_id=-1)
    assert out == greedy_by_recomputing(model, b, 4)
    assert any(t in model.obj_token_ids for row in out for t in row)  # the decoded identifiers went through it
    saved = save_model_dir(model, tok, tmp_path / "m", {"stage": 2, "model": {"preset": "tiny"}})
    again, _, meta = load_model_dir(saved)
    assert meta["pointer"] is True and again.pointer is not None
    assert again.generate_ids(b.input_ids, b.attention_mask, b.scenes, 4, eos_token_id=-1, pad_token_id=-1) == out


def test_pointer_phase_batches_mostly_ask_nearest_objects_of_moved_train_scenes(tmp_path: Path) -> None:
    toy = write_toy_inputs(tmp_path, scenes=3, objects=(5, 9))
    objs = load_objects(toy.spacespan / "objects.parquet")["train"]
    data = CurriculumData(2, objs, {k: load_rows(toy.spacespan, k, "train") for k in (1, 2)}, None, steps=4, seed=0)
    kinds = []
    for ex in data.batch(4, 12):
        inst, c = np.asarray(ex.scene.instance), np.asarray(ex.scene.centers)
        for prompt, answer in ex.turns:
            kinds.append(prompt.split("?")[0].split(":")[-1].split()[0])
            if "closest" in prompt:
                a, b = (int(x) for x in tt.parse_object_ids(answer))
                assert f"<OBJ{a:03d}>" in prompt
                assert int(inst[nearest_other(c, int(np.flatnonzero(inst == a)[0]))]) == b
    share = kinds.count("Which") / len(kinds)
    assert 0.5 < share < 0.8 and {"Where", "How"} <= set(kinds), (share, set(kinds))  # ~65%, the rest as stage 2
    assert data.batch(4, 3)[0].turns != data.batch(3, 3)[0].turns  # before `steps`: the usual stage-2 mix


def test_stage2_pointer_phase_moves_only_the_head_and_resumes_exactly(tmp_path: Path) -> None:
    toy = write_toy_inputs(tmp_path / "toy", scenes=4, objects=(5, 9))
    p = _params(steps=2)
    first = StagePaths(toy.spacespan, toy.symbols, toy.proxies, tmp_path / "first")
    train_stage(1, p, first, NullTracker())
    runs = {}
    for name, pointer_steps, stop in (("plain", 0, None), ("full", 4, None), ("killed", 4, 5)):
        paths = StagePaths(toy.spacespan, toy.symbols, toy.proxies, tmp_path / name)
        shutil.copytree(first.checkpoints / "stage1", paths.checkpoints / "stage1")
        p.train_stage2.pointer_steps, p.train_stage2.xy_pe_init = pointer_steps, [0.1, 2.0]
        if stop:
            assert train_stage(2, p, paths, NullTracker(), stop_after=stop) == {"stopped_at": float(stop)}
        train_stage(2, p, paths, NullTracker())
        runs[name] = _weights(paths.checkpoints / "stage2")
    plain, full, killed = runs["plain"], runs["full"], runs["killed"]
    body = [k for k in plain if not k.startswith("pointer.")]
    assert {k for k in full if k.startswith("pointer.")} == {"pointer.q.weight", "pointer.q.bias", "pointer.k.weight",
                                                             "pointer.k.bias"}
    # the body ends where the stage without a pointer phase ends: the head's phase froze it
    assert max(float((plain[k] - full[k]).abs().max()) for k in body) == 0.0
    assert float((full["pointer.q.weight"] - torch.eye(full["pointer.q.weight"].shape[0])).abs().max()) > 0
    assert max(float((full[k] - killed[k]).abs().max()) for k in full) <= 1e-6  # killed at step 5, resumed at 4
    p.train_stage3.pointer_steps = 1
    with pytest.raises(ValueError, match="pointer_steps"):
        train_stage(3, p, StagePaths(toy.spacespan, toy.symbols, toy.proxies, tmp_path / "full"), NullTracker())

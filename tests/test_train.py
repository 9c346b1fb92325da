"""Curriculum training: data, DeepSpeed on CPU (gloo + torch_adam), checkpoint resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from proxy3d.config import ModelParams, Params, StageParams, TrainParams
from proxy3d.model import text_tokenizer as tt
from proxy3d.model.build import create_model
from proxy3d.model.inputs import TextCodec, prompt_text
from proxy3d.tracking import NullTracker, Tracker
from proxy3d.train import engine as ds
from proxy3d.train.data import CurriculumData, SceneObjects, load_objects, load_rows, row_turn
from proxy3d.train.loop import StagePaths, train_stage
from proxy3d.train.toy import write_toy_inputs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> StagePaths:
    return write_toy_inputs(tmp_path_factory.mktemp("toy"), scenes=5, objects=(5, 9))


def _params(steps: int = 4) -> Params:
    p = Params()
    p.train.deepspeed_config = str(ROOT / "configs/deepspeed/zero2.json")
    p.train.checkpoint_every, p.train.log_every = 2, 1
    for st in (1, 2, 3, 4):
        setattr(p, f"train_stage{st}", StageParams(steps=steps, lr=2e-3, batch_size=2, warmup_steps=1, turns=2,
                                                   max_objects=6, max_length=48))
    return p


def test_deepspeed_config_takes_batch_lr_and_schedule_from_params() -> None:
    cfg = ds.ds_config(TrainParams(deepspeed_config=str(ROOT / "configs/deepspeed/zero2.json")),
                       StageParams(steps=30, lr=5e-4, batch_size=3, warmup_steps=5), "cpu")
    assert cfg["train_micro_batch_size_per_gpu"] == 3 and cfg["optimizer"]["params"]["lr"] == 5e-4
    assert cfg["optimizer"]["params"]["torch_adam"] is True and cfg["zero_optimization"]["stage"] == 2
    assert cfg["scheduler"]["params"]["total_num_steps"] == 30 and cfg["bf16"]["enabled"] is False
    with pytest.raises(FileNotFoundError, match="nope.json"):
        ds.ds_config(TrainParams(deepspeed_config="nope.json"), StageParams(), "cpu")


def test_batches_are_a_function_of_the_step_and_answers_restate_the_query(toy: StagePaths) -> None:
    objs = load_objects(toy.spacespan / "objects.parquet")["train"]
    rows = {1: load_rows(toy.spacespan, 1, "train")}
    a = CurriculumData(1, objs, rows, None, steps=100, seed=3, turns=4, max_objects=20)
    b = CurriculumData(1, objs, rows, None, steps=100, seed=3, turns=4, max_objects=20)
    ea, eb = a.batch(7, 4), b.batch(7, 4)
    assert [e.turns for e in ea] == [e.turns for e in eb]
    assert all(np.array_equal(x.scene.instance, y.scene.instance) for x, y in zip(ea, eb, strict=True))
    assert [e.turns for e in a.batch(8, 4)] != [e.turns for e in ea]
    for ex in a.batch(50, 16):
        for prompt, answer in ex.turns:
            if prompt.startswith("Question: What is <OBJ"):
                assert answer.startswith(prompt[len("Question: What is ") : -len("? Answer:")])
            if prompt.startswith("Question: Which object is the "):
                assert answer.startswith(prompt[len("Question: Which object is the ") : -len("? Answer:")])
    for step in (0, 60):  # no object is asked about twice in a sequence (else answers copy an earlier turn)
        for ex in CurriculumData(1, objs, {}, None, steps=100, seed=3, turns=8, max_objects=20).batch(step, 8):
            asked = [tt.parse_object_ids(a)[0] for _, a in ex.turns]
            assert len(asked) == len(set(asked)) == min(8, len(ex.scene))
    kinds = [p.startswith("Question: Which") for s in (0, 1, 2) for e in a.batch(s, 8) for p, _ in e.turns]
    assert 0 < sum(kinds) < len(kinds)  # grounding and "What is" questions both from the first step
    c = CurriculumData(1, objs, {}, None, steps=100, seed=3, turns=4, max_objects=20)
    early = max(len(e.scene) for s in range(5) for e in c.batch(s, 8))
    late = max(len(e.scene) for s in range(90, 95) for e in c.batch(s, 8))
    assert early <= 6 < late  # scene-size warm-up


def test_deepspeed_two_cpu_steps_lower_the_loss_on_a_fixed_batch(toy: StagePaths) -> None:
    torch.manual_seed(0)
    ds.init_distributed("cpu")
    tok = tt.build_text_tokenizer(["What is the chair? Answer: chair table"] * 10, 400)
    model = create_model(ModelParams(), tok, toy.symbols)
    codec = TextCodec(tok, tt.proxy_token_id(tok))
    data = CurriculumData(1, load_objects(toy.spacespan / "objects.parquet")["train"], {}, None, 10, 0, turns=2)
    batch = codec.collate(data.batch(0, 2), 48)
    cfg = ds.ds_config(TrainParams(deepspeed_config=str(ROOT / "configs/deepspeed/zero2.json")),
                       StageParams(steps=10, lr=3e-4, batch_size=2, warmup_steps=0), "cpu")
    cfg["scheduler"]["params"]["warmup_min_ratio"] = 1.0  # full lr from the first step
    engine = ds.initialize(model, cfg, ds.param_groups(model, 3e-4, {"projector": 0.1}))  # no projector: one group
    assert len(engine.optimizer.param_groups) == 1
    losses = []
    for _ in range(2):
        loss = engine(batch.input_ids, batch.attention_mask, batch.labels, batch.scenes)
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        losses.append(float(engine(batch.input_ids, batch.attention_mask, batch.labels, batch.scenes)))
    assert losses[2] < losses[1] < losses[0], losses


def test_projector_trains_at_its_own_lr_scale() -> None:
    """A stage's projector_lr_scale reaches the optimizer: the projector's group runs at lr x scale, through the
    warm-up schedule too (DeepSpeed scales each group's own lr)."""
    ds.init_distributed("cpu")
    net = torch.nn.Module()
    net.body, net.projector = torch.nn.Linear(4, 4), torch.nn.Linear(3, 4)
    net.body.bias.requires_grad_(False)
    groups = ds.param_groups(net, 1e-3, {"projector": 0.1, "missing": 5.0})
    assert [len(g["params"]) for g in groups] == [1, 2] and groups[1]["lr"] == pytest.approx(1e-4)
    cfg = ds.ds_config(TrainParams(deepspeed_config=str(ROOT / "configs/deepspeed/zero2.json")),
                       StageParams(steps=10, lr=1e-3, batch_size=1, warmup_steps=4), "cpu")
    engine = ds.initialize(net, cfg, groups)
    seen = []
    for _ in range(3):
        engine.lr_scheduler.step()
        lrs = [g["lr"] for g in engine.optimizer.param_groups]
        assert lrs[1] == pytest.approx(0.1 * lrs[0]) and lrs[0] > 0
        seen.append(lrs[0])
    assert seen[0] < seen[1] < seen[2] <= 1e-3  # warming up


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = load_file(str(ckpt / "proxy3d.safetensors"))
    out.update({f"vlm.{k}": v for k, v in load_file(str(ckpt / "vlm" / "model.safetensors")).items()})
    return out


def test_killed_stage_resumes_to_the_same_final_weights(toy: StagePaths, tmp_path: Path) -> None:
    p = _params(steps=5)
    full = StagePaths(toy.spacespan, toy.symbols, toy.proxies, tmp_path / "full")
    m_full = train_stage(1, p, full, NullTracker())
    killed = StagePaths(toy.spacespan, toy.symbols, toy.proxies, tmp_path / "killed")
    assert train_stage(1, p, killed, NullTracker(), stop_after=3) == {"stopped_at": 3.0}
    assert (killed.checkpoints / "stage1/ds/latest").exists() and not (killed.checkpoints / "stage1/bundle.json").exists()
    loads = []
    real_load = torch.load

    def spy(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    torch.load = spy
    try:
        train_stage(1, p, killed, NullTracker())  # resumes at step 2 (last checkpoint)
    finally:
        torch.load = real_load
    assert loads and all(w is True for w in loads), loads  # DeepSpeed's own engine passes weights_only=False
    a, b = _weights(full.checkpoints / "stage1"), _weights(killed.checkpoints / "stage1")
    assert a.keys() == b.keys()
    delta = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert delta <= 1e-6, delta
    assert np.isfinite(m_full["final_loss"]) and "what_is_acc" in m_full


def test_killed_stage_does_not_resume_after_its_inputs_changed(toy: StagePaths, tmp_path: Path, caplog) -> None:
    """The resume fingerprint covers the inputs (SpaceSpan, symbols, proxies, previous checkpoint), not only the
    params: after an upstream stage reran, continuing the old weights would mix two datasets."""
    import shutil

    inputs = tmp_path / "inputs"
    for name in ("spacespan", "symbols", "proxies"):
        shutil.copytree(getattr(toy, name), inputs / name)
    paths = StagePaths(inputs / "spacespan", inputs / "symbols", inputs / "proxies", tmp_path / "ck")
    p = _params(steps=5)
    assert train_stage(1, p, paths, NullTracker(), stop_after=3) == {"stopped_at": 3.0}
    stamp = paths.checkpoints / "stage1/ds/fingerprint.json"
    assert stamp.exists() and '"symbols"' in stamp.read_text()
    icon = sorted((inputs / "symbols").rglob("*.png"))[0]
    icon.write_bytes(icon.read_bytes())  # rewritten by an upstream rerun (same name, new file)
    with caplog.at_level("INFO"):
        train_stage(1, p, paths, NullTracker())
    assert "written with other params or inputs: not resuming" in caplog.text
    assert "resumed from" not in caplog.text
    # rerun with other params and killed: the finished folder of the old run no longer reads as this stage's model
    assert (paths.checkpoints / "stage1/bundle.json").exists()
    assert train_stage(1, _params(steps=6), paths, NullTracker(), stop_after=2) == {"stopped_at": 2.0}
    assert not (paths.checkpoints / "stage1/bundle.json").exists()


def test_cli_runs_all_four_stages_each_from_the_previous(toy: StagePaths, tmp_path: Path, monkeypatch) -> None:
    from proxy3d.stages.train import main

    params = tmp_path / "params.yaml"
    params.write_text("train_stage1: {steps: 2, batch_size: 2, turns: 2, max_objects: 5}\n"
                      "train_stage2: {steps: 2, batch_size: 2, turns: 2}\ntrain_stage3: {steps: 2, batch_size: 2}\n"
                      "train_stage4: {steps: 2, batch_size: 2}\n"
                      f"train: {{deepspeed_config: {ROOT / 'configs/deepspeed/zero2.json'}}}\ntracking: {{enabled: false}}\n")
    monkeypatch.chdir(tmp_path)
    for st in (1, 2, 3, 4):
        assert main(["--stage", str(st), "--params", str(params), "--spacespan", str(toy.spacespan),
                     "--symbols", str(toy.symbols), "--proxies", str(toy.proxies), "--checkpoints", "ck"]) == 0
        m = json.loads((tmp_path / f"metrics/train_stage{st}.json").read_text())
        assert m["stage"] == st and np.isfinite(m["final_loss"])
    bundle = json.loads((tmp_path / "ck/stage4/bundle.json").read_text())
    assert bundle["stage"] == 4 and bundle["feature_dim"] == 16
    # the blind baseline: stage 4 again from stage 3 with no visual tokens, into its own folder and metrics file
    stage4 = {f: f.read_bytes() for f in (tmp_path / "ck/stage4").rglob("*") if f.is_file()}
    common = ["--params", str(params), "--spacespan", str(toy.spacespan), "--symbols", str(toy.symbols),
              "--proxies", str(toy.proxies), "--checkpoints", "ck"]
    with pytest.raises(SystemExit):
        main(["--stage", "3", "--blind", *common])
    assert main(["--stage", "4", "--blind", *common]) == 0
    assert json.loads((tmp_path / "ck/stage4_blind/bundle.json").read_text())["blind"] is True
    assert np.isfinite(json.loads((tmp_path / "metrics/train_blind.json").read_text())["final_loss"])
    assert {f: f.read_bytes() for f in (tmp_path / "ck/stage4").rglob("*") if f.is_file()} == stage4


def test_grounding_rows_restate_the_target_label_before_its_identifier() -> None:
    objs = SceneObjects("scene0000_00", np.array([3, 10]), ["lamp", "couch"], np.array([0, 1]),
                        np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32))
    row = pd.Series({"task": "grounding", "question": "this is a brown couch.", "answers": np.array(["<OBJ010>"]),
                     "target_object_ids": np.array([10])})
    assert row_turn(row, objs) == ("Question: this is a brown couch. Answer:", "couch <OBJ010>")
    assert row_turn(row) == ("Question: this is a brown couch. Answer:", "<OBJ010>")  # no object table: as stored
    none = pd.Series({"task": "multi_grounding", "question": "the orange cup.", "answers": np.array(["none"]),
                      "target_object_ids": np.array([], dtype=np.int32)})
    assert row_turn(none, objs)[1] == "none"
    qa = pd.Series({"task": "qa", "question": "What is next to the lamp?", "answers": np.array(["couch"]),
                    "target_object_ids": np.array([10])})
    assert row_turn(qa, objs)[1] == "couch"


def test_stage4_shows_a_share_of_its_rows_on_simplified_scenes(toy: StagePaths) -> None:
    from proxy3d.train.loop import proxy_loader

    objs = load_objects(toy.spacespan / "objects.parquet")["train"]
    rows = {4: load_rows(toy.spacespan, 4, "train")}
    loader = proxy_loader(toy.proxies)
    real = CurriculumData(4, objs, rows, loader, steps=10, seed=0, mix_previous=0.0).batch(0, 8)
    assert all(e.scene.features is not None and len(e.turns) == 1 for e in real)
    mixed = [e for s in range(4) for e in CurriculumData(4, objs, rows, loader, steps=10, seed=0, mix_previous=0.0,
                                                         turns=3, simplified_share=0.5).batch(s, 8)]
    simple = [e for e in mixed if e.scene.features is None]
    assert 0 < len(simple) < len(mixed) and max(len(e.turns) for e in simple) > 1


def test_spread_scene_repeats_each_object_by_surface_area_on_its_box_surface() -> None:
    from proxy3d.model.inputs import SceneInput
    from proxy3d.train.data import spread_scene

    centers = np.array([[3.0, 2.5, -0.025], [1.0, 1.0, 0.75], [4.0, 4.0, 1.05]], np.float32)
    sizes = np.array([[6.0, 5.0, 0.05], [0.08, 0.08, 0.1], [1.0, 0.5, 0.7]])  # floor, cup, cabinet
    scene = SceneInput.from_objects([12, 40, 7], [3, 9, 21], centers)
    out = spread_scene(scene, sizes, 120, np.random.default_rng(0))
    ids, counts = np.unique(out.instance, return_counts=True)
    assert len(out) == 120 and ids.tolist() == [7, 12, 40]
    per = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    assert per[40] == 1 and per[12] > per[7] > per[40]  # >= 1 each, more for more surface
    for oid, cat, c, s in zip([12, 40, 7], [3, 9, 21], centers, sizes, strict=True):
        mine = out.instance == oid
        assert (out.category[mine] == cat).all()
        q = np.abs(out.centers[mine] - c) - s / 2  # signed distance to each face pair: <= 0 inside, max = 0 on it
        assert np.allclose(q.max(1), 0.0, atol=1e-5)
    again = spread_scene(scene, sizes, 120, np.random.default_rng(0))
    assert np.array_equal(again.centers, out.centers) and np.array_equal(again.instance, out.instance)
    assert spread_scene(scene, sizes, 3, np.random.default_rng(0)) is scene  # no room to spread: unchanged


def test_simplified_tokens_spread_every_simplified_scene_of_a_stage(toy: StagePaths) -> None:
    objs = load_objects(toy.spacespan / "objects.parquet")["train"]
    rows = {k: load_rows(toy.spacespan, k, "train") for k in (1, 2, 3)}
    plain = CurriculumData(3, objs, rows, None, steps=10, seed=0).batch(0, 8)
    assert all(len(e.scene) == len(np.unique(e.scene.instance)) for e in plain)
    spread = CurriculumData(3, objs, rows, None, steps=10, seed=0, simplified_tokens=(60, 80)).batch(0, 8)
    assert all(60 <= len(e.scene) <= 80 for e in spread)
    with pytest.raises(ValueError, match="simplified_tokens"):
        CurriculumData(3, objs, rows, None, steps=10, seed=0, simplified_tokens=(50, 10))


def test_stage3_referring_expressions_name_the_target_first_and_answer_its_identifier(toy: StagePaths) -> None:
    objs = load_objects(toy.spacespan / "objects.parquet")["train"]
    rows = {k: load_rows(toy.spacespan, k, "train") for k in (1, 2, 3)}
    data = CurriculumData(3, objs, rows, None, steps=10, seed=0, mix_previous=0.0, refer_share=1.0)
    turns = [t for s in range(3) for e in data.batch(s, 4) for t in e.turns]
    assert turns
    for prompt, answer in turns:
        label, ident = answer.rsplit(" ", 1)
        assert re.fullmatch(r"<OBJ\d{3}>", ident)
        text = prompt.split("Question: ", 1)[1]
        assert 0 <= text.find(label) < text.rfind(" the "), (prompt, answer)  # the target comes before the anchor
    with_rows = CurriculumData(3, objs, rows, None, steps=10, seed=0, mix_previous=0.0, refer_share=0.0).batch(0, 4)
    assert not any(t[0].startswith("Question: find the") for e in with_rows for t in e.turns)


def test_stage4_spatial_share_asks_numeric_vsibench_questions_on_real_or_simplified_scenes(toy: StagePaths) -> None:
    from proxy3d.train.loop import proxy_loader

    objs = load_objects(toy.spacespan / "objects.parquet")["train"]
    rows = {k: load_rows(toy.spacespan, k, "train") for k in (1, 2, 3, 4)}
    loader = proxy_loader(toy.proxies)
    data = CurriculumData(4, objs, rows, loader, steps=10, seed=0, mix_previous=0.0, simplified_share=0.5,
                          real_turns=3, spatial_share=1.0)
    batch = [e for s in range(4) for e in data.batch(s, 4)]
    starts = ("Question: How many ", "Question: Measuring from the closest point", "Question: What is the length",
              "Question: What is the size of this room", "Question: If I am standing by")
    assert all(t[0].startswith(starts) for e in batch for t in e.turns)
    assert all(re.fullmatch(r"\d+(\.\d)?|[A-D]", t[1]) for e in batch for t in e.turns)
    assert all(("Options: A. " in t[0]) == t[1].isalpha() for e in batch for t in e.turns)
    real = [e for e in batch if e.scene.features is not None]
    assert real and len(real) < len(batch)  # both kinds of scene
    assert all(len(e.turns) <= 3 for e in real)
    if any("floor" in o.labels for o in objs.values()):
        assert any(t[0].startswith(starts[3]) for e in batch for t in e.turns)
    off = CurriculumData(4, objs, rows, loader, steps=10, seed=0, mix_previous=0.0, simplified_share=0.5).batch(0, 8)
    assert not any(t[0].startswith(starts[3]) for e in off for t in e.turns)


def test_stage2_augment_moves_scenes_rigidly_and_keeps_the_answers_consistent(toy: StagePaths) -> None:
    """augment_scene keeps >= half the objects, heights and pairwise distances (a rigid move in the floor plane) and
    changes the positions; stage-2 answers are computed on the moved scene (closest = its nearest other object)."""
    from proxy3d.train.data import augment_scene, nearest_other

    objs = load_objects(toy.spacespan / "objects.parquet")["train"]
    o = max(objs.values(), key=lambda s: len(s.ids))
    moved = [augment_scene(o, np.random.default_rng(s)) for s in range(20)]
    for m in moved:
        idx = np.array([int(np.flatnonzero(o.ids == i)[0]) for i in m.ids])
        assert len(m.ids) >= len(o.ids) // 2 and m.labels == [o.labels[i] for i in idx]
        np.testing.assert_allclose(m.centers[:, 2], o.centers[idx, 2], atol=1e-5)
        d0 = np.linalg.norm(o.centers[idx][:, None] - o.centers[idx][None], axis=-1)
        np.testing.assert_allclose(np.linalg.norm(m.centers[:, None] - m.centers[None], axis=-1), d0, atol=1e-4)
        assert all(nearest_other(m.centers, k) == nearest_other(o.centers[idx], k) for k in range(len(idx)))
    assert not all(np.allclose(m.centers[:, :2], o.centers[:len(m.ids), :2]) for m in moved)
    a = augment_scene(o, np.random.default_rng(5))
    b = augment_scene(o, np.random.default_rng(5))
    np.testing.assert_array_equal(a.centers, b.centers)
    # the stage-2 data asks "Where is" about the moved position: every answered centre is one of a moved scene's
    plain = CurriculumData(2, objs, {}, None, steps=10, seed=0, mix_previous=0.0).batch(0, 8)
    aug = CurriculumData(2, objs, {}, None, steps=10, seed=0, mix_previous=0.0, augment=True).batch(0, 8)
    where = re.compile(r"\(([-\d.]+), ([-\d.]+), ([-\d.]+)\)")
    coords = {tuple(map(float, where.search(a).groups())) for e in plain for _, a in e.turns if where.search(a)}
    moved_coords = {tuple(map(float, where.search(a).groups())) for e in aug for _, a in e.turns if where.search(a)}
    assert coords and moved_coords and not moved_coords <= coords


def test_rows_read_from_parquet_have_the_prompt_the_api_builds(tmp_path: Path) -> None:
    """A null situation comes back from Parquet as NaN: training prompts once read "Situation: nan" while the
    API (``situation=None``) left it out, so the deployed model saw a prompt format it was never trained on."""
    rows = pd.DataFrame({"task": ["qa", "situated_qa"], "question": ["What is next to the lamp?", "Is the door left?"],
                         "answers": [np.array(["couch"]), np.array(["left"])],
                         "situation": [None, "I face the window."], "options": [None, None]})
    rows.to_parquet(tmp_path / "rows.parquet")
    back = pd.read_parquet(tmp_path / "rows.parquet")
    assert back.situation.isna()[0]  # what pandas really returns for the null cell
    trained = [row_turn(r)[0] for _, r in back.iterrows()]
    served = [prompt_text(r["question"], r["situation"]) for r in back.to_dict("records")]
    assert trained == served == ["Question: What is next to the lamp? Answer:",
                                 "Situation: I face the window. Question: Is the door left? Answer:"]
    assert prompt_text("Q?", float("nan")) == prompt_text("Q?", "  ") == prompt_text("Q?", None) == "Question: Q? Answer:"


def test_options_are_normalised_in_one_place_for_training_rows_and_api_items(tmp_path: Path) -> None:
    """``prompt_text`` normalises options itself: training rows (Parquet arrays, None) and API items (lists, or
    the NaN that ``pd.read_json`` gives a record without options, which used to raise TypeError) get one prompt;
    a single string, once split into characters by the API and dropped by training, is refused."""
    rows = pd.DataFrame({"task": ["spatial_mc", "qa"], "question": ["Left or right?", "What color?"],
                         "answers": [np.array(["A"]), np.array(["red"])], "situation": [None, None],
                         "options": [np.array(["A. left", "B. right"]), None]})
    rows.to_parquet(tmp_path / "rows.parquet")
    back = pd.read_parquet(tmp_path / "rows.parquet")
    trained = [row_turn(r)[0] for _, r in back.iterrows()]
    assert trained == [prompt_text("Left or right?", None, ["A. left", "B. right"]), prompt_text("What color?")]
    assert trained[0] == "Question: Left or right? Options: A. left; B. right Answer:"
    (tmp_path / "items.jsonl").write_text('{"question": "What color?"}\n{"question": "L?", "options": ["A. l"]}\n')
    items = pd.read_json(tmp_path / "items.jsonl", lines=True).to_dict("records")
    assert pd.isna(items[0]["options"])
    assert [prompt_text(it["question"], it.get("situation"), it.get("options")) for it in items] == [
        "Question: What color? Answer:", "Question: L? Options: A. l Answer:"]
    for missing in (None, float("nan"), "", [], np.array([])):
        assert prompt_text("Q?", None, missing) == "Question: Q? Answer:"
    with pytest.raises(ValueError, match=r"options='A. left; B. right' is one string; give a list"):
        prompt_text("Q?", None, "A. left; B. right")


def test_templated_coordinates_round_the_object_table_values_as_spacespan_does(tmp_path: Path) -> None:
    """``load_objects`` keeps the table's float64: a centre stored as 5.174999978898377 is "5.17" in SpaceSpan's
    coordinate rows, and was "5.18" in the templated "Where is" answer once it had been cast to float32 (29 of
    the default data's 293 objects had two answers to one question)."""
    from proxy3d.train.data import where_is

    x = 5.174999978898377
    row = dict(scene_id="scene0000_00", object_id=1, label="chair", category=2, center_x=x, center_y=1.23,
               center_z=0.4, size_x=0.5, size_y=0.5, size_z=0.9, split="train")
    pd.DataFrame([row]).to_parquet(tmp_path / "objects.parquet")
    o = load_objects(tmp_path / "objects.parquet")["train"]["scene0000_00"]
    assert where_is(1, o.centers[0])[1] == f"<OBJ001> ({x:.2f}, 1.23, 0.40)" == "<OBJ001> (5.17, 1.23, 0.40)"
    assert o.scene_input().centers.dtype == np.float32  # the model still gets float32


def test_objects_past_the_identifier_tokens_are_left_out_of_the_templated_curriculum(tmp_path: Path, caplog) -> None:
    """There is no <OBJ120>: a real ScanNet scene with that many objects had stopped stage 1 in reference.fuse."""
    rows = [dict(scene_id="scene0000_00", object_id=i, label="chair", category=2, center_x=float(i), center_y=1.0,
                 center_z=0.4, size_x=0.5, size_y=0.5, size_z=0.9, split="train") for i in (3, 99, 120)]
    pd.DataFrame(rows).to_parquet(tmp_path / "objects.parquet")
    with caplog.at_level("WARNING"):
        o = load_objects(tmp_path / "objects.parquet")["train"]["scene0000_00"]
    assert o.ids.tolist() == [3, 99] and "1 objects in 1 scenes have ids past <OBJ099>" in caplog.text


class _Recorder(Tracker):
    """Keeps what a stage logs."""

    def __init__(self) -> None:
        self.logged: list[tuple[dict, int | None]] = []

    def log_metrics(self, metrics, step: int | None = None) -> None:
        self.logged.append((dict(metrics), step))


def test_zero3_offload_stage_finishes_with_its_probes(toy: StagePaths, tmp_path: Path, monkeypatch, caplog) -> None:
    """Under ZeRO-3 the engine's weights are empty partitions outside its forward: the probes (every
    ``probe_every`` steps and at the end) once ran on them and crashed every stage after its checkpoint folder
    ``ds/`` had been deleted, so a rerun started over and crashed again. A stage failing in its final probes now
    keeps ``ds/`` and the rerun resumes."""
    from proxy3d.train import loop

    p = _params(steps=4)
    p.train.deepspeed_config = str(ROOT / "configs/deepspeed/zero3_offload.json")
    p.train.probe_every = 2
    paths = StagePaths(toy.spacespan, toy.symbols, toy.proxies, tmp_path / "ck")
    real_probes, calls = loop.run_probes, []

    def fails_at_the_end(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 3:  # steps 2 and 4, then the final probes
            raise RuntimeError("final probes failed")
        return real_probes(*args, **kwargs)

    monkeypatch.setattr(loop, "run_probes", fails_at_the_end)
    first = _Recorder()
    with pytest.raises(RuntimeError, match="final probes failed"):
        train_stage(1, p, paths, first)
    logged = {step: metrics for metrics, step in first.logged if "loss" in metrics}  # log_every 1: every step
    assert sorted(logged) == [1, 2, 3, 4]
    assert all(np.isfinite(m["loss"]) and m["tokens_per_s"] > 0 for m in logged.values())
    # the lr each step ran at: DeepSpeed's WarmupCosineLR warms up linearly from warmup_min_ratio 0 over at least 2
    # iterations, then decays to cos_min_ratio 0.1 (zero3_offload.json) of the stage's 2e-3 by the last step
    assert [logged[s]["lr"] for s in (1, 2, 3, 4)] == pytest.approx([0.0, 1e-3, 1.1e-3, 2e-4])
    assert (paths.checkpoints / "stage1/ds/latest").exists()  # kept: a failed end of stage resumes
    monkeypatch.setattr(loop, "run_probes", real_probes)
    tracker = _Recorder()
    with caplog.at_level("INFO"):
        m = train_stage(1, p, paths, tracker)
    assert "resumed from" in caplog.text
    assert np.isfinite(m["final_loss"]) and {"what_is_acc", "grounding_acc", "probe_seconds"} <= m.keys()
    assert [step for metrics, step in tracker.logged if "probe.what_is_acc" in metrics] == [4]
    resumed = {step: metrics for metrics, step in tracker.logged if "loss" in metrics}
    assert sorted(resumed) == [3, 4]  # the steps after the step-2 checkpoint, at the same lr and loss as before
    assert all(resumed[s]["lr"] == logged[s]["lr"] and resumed[s]["loss"] == pytest.approx(logged[s]["loss"])
               for s in (3, 4))
    assert not (paths.checkpoints / "stage1/ds").exists() and (paths.checkpoints / "stage1/bundle.json").exists()


class _Quadratic(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.lin(x) - 1).pow(2).mean()


def test_every_loop_step_is_one_optimizer_step_and_accumulation_is_refused(tmp_path: Path) -> None:
    """The loop counts steps (schedule, checkpoints, resume) as optimizer steps: with the 8 accumulation steps
    zero3_offload.json once had, 16 loop steps were 2 optimizer steps and a checkpoint between two of them lost
    the gradients accumulated so far. Every shipped config steps once per batch; accumulation is refused."""
    ds.init_distributed("cpu")
    sp = StageParams(steps=3, lr=1e-3, batch_size=2, warmup_steps=1)
    for name in ("zero2.json", "zero3_offload.json"):
        cfg = ds.ds_config(TrainParams(deepspeed_config=str(ROOT / "configs/deepspeed" / name)), sp, "cpu")
        torch.manual_seed(0)
        engine = ds.initialize(_Quadratic(), cfg)
        for step in range(3):
            loss = engine(torch.randn(2, 4, generator=torch.Generator().manual_seed(step)))
            engine.backward(loss)
            engine.step()
        assert engine.global_steps == 3, name
    bad = json.loads((ROOT / "configs/deepspeed/zero2.json").read_text())
    bad["gradient_accumulation_steps"] = 8
    (tmp_path / "accum.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"accum\.json: gradient_accumulation_steps=8.*set it to 1 and raise "
                                         r"train_stage<N>\.batch_size"):
        ds.ds_config(TrainParams(deepspeed_config=str(tmp_path / "accum.json")), sp, "cpu")


def test_killed_stage_restarts_after_its_deepspeed_config_or_code_changed(toy: StagePaths, tmp_path: Path,
                                                                         monkeypatch, caplog) -> None:
    """The resume fingerprint covers the DeepSpeed JSON (betas, clipping: not in params.yaml) and the model/train
    code: a killed stage resumed after either changed would continue weights built under the old ones."""
    from proxy3d.train import loop

    cfg = json.loads((ROOT / "configs/deepspeed/zero2.json").read_text())
    ds_json = tmp_path / "ds.json"
    ds_json.write_text(json.dumps(cfg))
    p = _params(steps=5)
    p.train.deepspeed_config = str(ds_json)
    paths = StagePaths(toy.spacespan, toy.symbols, toy.proxies, tmp_path / "ck")

    def rerun() -> str:
        caplog.clear()
        with caplog.at_level("INFO"):
            assert train_stage(1, p, paths, NullTracker(), stop_after=3) == {"stopped_at": 3.0}
        return caplog.text

    rerun()
    cfg["optimizer"]["params"]["betas"], cfg["gradient_clipping"] = [0.5, 0.6], 0.01
    ds_json.write_text(json.dumps(cfg))
    text = rerun()
    assert "not resuming" in text and "resumed from" not in text
    assert "resumed from" in rerun()  # nothing changed: it resumes
    monkeypatch.setattr(loop, "source_signature", lambda: "edited code")
    text = rerun()
    assert "not resuming" in text and "resumed from" not in text


def test_source_signature_follows_the_model_and_train_code(tmp_path: Path) -> None:
    from proxy3d.train.loop import source_signature

    for sub in ("model", "train", "eval"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "a.py").write_text("x = 1\n")
    before = source_signature(tmp_path)
    assert source_signature(ROOT / "proxy3d") != before
    (tmp_path / "eval" / "a.py").write_text("x = 2\n")
    assert source_signature(tmp_path) == before  # other packages do not restart training
    (tmp_path / "model" / "a.py").write_text("x = 2\n")
    assert source_signature(tmp_path) != before


def test_the_venv_ninja_goes_first_on_path(tmp_path: Path, monkeypatch) -> None:
    """DeepSpeed's shm_comm was prebuilt with the venv's ninja; another ninja first on PATH rebuilt it per stage."""
    import shutil
    import sys

    venv_bin, other = tmp_path / "venv" / "bin", tmp_path / "usr" / "bin"
    for d in (venv_bin, other):
        d.mkdir(parents=True)
        (d / "ninja").write_text("#!/bin/sh\n")
        (d / "ninja").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(other))
    ds._venv_ninja_first()
    assert shutil.which("ninja") == str(venv_bin / "ninja")
    before = ds.os.environ["PATH"]
    ds._venv_ninja_first()  # already first: PATH unchanged
    assert ds.os.environ["PATH"] == before


def test_stage2_asks_how_many_of_a_label_and_answers_the_count_in_its_scene(toy: StagePaths) -> None:
    from proxy3d.vocab import category_id

    objs = load_objects(toy.spacespan / "objects.parquet")["train"]
    data = CurriculumData(2, objs, {}, None, steps=100, seed=3, turns=8, max_objects=20)
    asked = 0
    for ex in data.batch(5, 16):
        for prompt, answer in ex.turns:
            if prompt.startswith("Question: How many "):
                label = prompt[len("Question: How many ") : -len("(s) are in this room? Answer:")]
                assert answer == str(int((ex.scene.category == category_id(label)).sum())), (prompt, answer)
                asked += 1
    assert asked >= 8

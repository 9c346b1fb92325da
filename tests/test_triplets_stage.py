"""Stage ``triplets`` end to end on the synthetic ScanNet-layout world, through the real scene reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from proxy3d.config import DataParams, PerceptionParams
from proxy3d.tracking import NullTracker
from proxy3d.types import load_triplets

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    dataset = pytest.importorskip("proxy3d.scenes.synth.dataset")
    root = tmp_path_factory.mktemp("synth") / "data"
    dataset.generate_dataset(root, dataset.SynthConfig(scenes=1, frames=4, width=160, height=120), progress=False)
    return root


def test_stage_writes_triplets_whose_points_fall_in_their_objects(synth_root, tmp_path):
    from proxy3d.stages import triplets as stage

    p = PerceptionParams(input_height=120, input_width=160, batch_size=2, device="cpu")
    metrics = stage.run(p, DataParams(frames=4), synth_root / "scenes", tmp_path / "out", NullTracker())
    (sid,) = metrics["per_scene"]
    assert metrics["scenes"] == 1 and metrics["frames"] == 4 and metrics["patches_per_scene"] == 4 * 8 * 10
    assert metrics["valid_pct"] > 90 and metrics["labelled_pct"] > 50 and metrics["seconds_per_frame"] > 0
    t = load_triplets(tmp_path / "out" / f"{sid}.safetensors")
    assert t.meta["frames"] == 4 and t.meta["encoder"] == "efficientnet_lite0" and t.meta["objects"]
    boxes = {o["object_id"]: np.array(o["aabb"]) for o in t.meta["objects"]}
    assert set(t.instance_category) >= set(boxes)
    inside = []
    for oid, box in boxes.items():  # the scene reader's poses + depth put patch points on their objects
        pts = t.points[(t.labels == oid) & t.valid]
        lo, hi = box[:3] - box[3:] / 2 - 0.05, box[:3] + box[3:] / 2 + 0.05
        inside.extend(((pts > lo) & (pts < hi)).all(1))
    assert np.mean(inside) > 0.95


def test_main_writes_metrics_json_and_rejects_bad_scene_ids(synth_root, tmp_path, monkeypatch):
    from proxy3d.stages import triplets as stage

    monkeypatch.setenv("PROXY3D_TRACKING", "0")
    params = tmp_path / "params.yaml"
    params.write_text("perception: {input_height: 120, input_width: 160, batch_size: 4, device: cpu}\n"
                      "data: {frames: 2}\ntracking: {enabled: false}\n")
    (sid,) = [d.name for d in (synth_root / "scenes").iterdir()]
    rc = stage.main(["--params", str(params), "--data", str(synth_root), "--out", str(tmp_path / "o"),
                     "--metrics", str(tmp_path / "m.json"), "--scenes", sid])
    assert rc == 0 and json.loads((tmp_path / "m.json").read_text())["frames"] == 2
    with pytest.raises(ValueError, match="not a safe name"):
        stage.main(["--params", str(params), "--data", str(synth_root), "--out", str(tmp_path / "o"),
                    "--metrics", str(tmp_path / "m.json"), "--scenes", "../etc"])

"""A tiny deterministic stand-in for the training inputs (SpaceSpan Parquet + object table, symbol and
identifier images, proxies), in the contract formats, for tests and for ``bench/curriculum.py`` when the
pipeline's artifacts are not there yet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from proxy3d.io import spacespan_partition
from proxy3d.train.loop import StagePaths
from proxy3d.types import Proxies, save_proxies
from proxy3d.vocab import categories


def toy_objects(scenes: int = 8, seed: int = 0, labels: int = 24, objects: tuple[int, int] = (8, 16),
                val_fraction: float = 0.25) -> pd.DataFrame:
    """A random object table (columns of ``objects.parquet``)."""
    rng = np.random.default_rng(seed)
    cats = categories()
    rows = []
    n_val = max(1, int(round(scenes * val_fraction)))
    for s in range(scenes):
        n = int(rng.integers(objects[0], objects[1] + 1))
        cat_ids = rng.integers(labels, size=n)
        for i in range(n):
            c, z = rng.uniform(0, 6, 2), rng.uniform(0, 2)
            size = rng.uniform(0.2, 1.5, 3)
            rows.append(dict(scene_id=f"scene{s:04d}_00", object_id=i, label=cats[cat_ids[i]], category=int(cat_ids[i]),
                             center_x=c[0], center_y=c[1], center_z=z, size_x=size[0], size_y=size[1], size_z=size[2],
                             split="val" if s >= scenes - n_val else "train"))
    return pd.DataFrame(rows)


def objects_from_scenes(data_root: Path) -> pd.DataFrame:
    """The object table of a ScanNet-layout folder (split from ``data/splits``), as the spacespan stage writes it."""
    from proxy3d.scenes.scannet import list_scenes, load_objects

    val = set((Path(data_root) / "splits" / "scannetv2_val.txt").read_text().split())
    rows = []
    for sid in list_scenes(data_root):
        for o in load_objects(data_root, sid):
            a = [float(v) for v in o.aabb]
            rows.append(dict(scene_id=sid, object_id=o.object_id, label=o.label, category=o.category,
                             center_x=a[0], center_y=a[1], center_z=a[2], size_x=a[3], size_y=a[4], size_z=a[5],
                             split="val" if sid in val else "train"))
    return pd.DataFrame(rows)


def write_toy_inputs(root: Path, scenes: int = 8, seed: int = 0, labels: int = 24, objects: tuple[int, int] = (8, 16),
                     feature_dim: int = 16, val_fraction: float = 0.25, table: pd.DataFrame | None = None) -> StagePaths:
    """Write SpaceSpan-format rows (stages 1, 3, 4), proxies and symbols for an object table (random if None)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    paths = StagePaths(root / "spacespan", root / "symbols", root / "proxies", root / "checkpoints")
    table = toy_objects(scenes, seed, labels, objects, val_fraction) if table is None else table
    qa: dict[int, list[dict]] = {1: [], 3: [], 4: []}
    for sid, g in table.groupby("scene_id", sort=True):
        cat_ids = g["category"].to_numpy()
        centers = g[["center_x", "center_y", "center_z"]].to_numpy(np.float32)
        for i, label, h, split in zip(g["object_id"], g["label"], g["size_z"], g["split"], strict=True):
            base = dict(source="synthetic", scene_id=sid, target_object_ids=[int(i)], situation=None, position=None,
                        rotation=None, options=None, split=split)
            qa[1].append(dict(base, id=f"{sid}-id-{i}", task="id_align", question=f"What is <OBJ{i:03d}>?",
                              answers=[f"<OBJ{i:03d}> {label}"], curriculum_stage=1))
            qa[3].append(dict(base, id=f"{sid}-attr-{i}", task="attribute", question=f"How tall is <OBJ{i:03d}>?",
                              answers=[f"{h:.1f}"], curriculum_stage=3))
            qa[4].append(dict(base, id=f"{sid}-qa-{i}", task="grounding", question=f"Find the {label}.",
                              answers=[f"<OBJ{i:03d}>"], curriculum_stage=4))
        ids = g["object_id"].to_numpy()
        k_per = rng.integers(1, 4, len(ids))
        rep = np.repeat(np.arange(len(ids)), k_per)
        feats = rng.normal(size=(len(rep), feature_dim)).astype(np.float32)
        feats[:, 0] += cat_ids[rep]
        save_proxies(Proxies(str(sid), feats, centers[rep] + rng.normal(0, 0.05, (len(rep), 3)).astype(np.float32),
                             ids[rep].astype(np.int32), cat_ids[rep].astype(np.int32), np.ones(len(rep), np.int32)),
                     paths.proxies / f"{sid}.safetensors")
    paths.spacespan.mkdir(parents=True, exist_ok=True)
    table.to_parquet(paths.spacespan / "objects.parquet", index=False)
    for st, rows in qa.items():
        df = pd.DataFrame(rows)
        for split in ("train", "val"):
            d = spacespan_partition(paths.spacespan, st, split)
            d.mkdir(parents=True, exist_ok=True)
            df[df.split == split].to_parquet(d / "part-0.parquet", index=False)
    write_toy_symbols(paths.symbols)
    return paths


def write_toy_symbols(folder: Path, size: int = 28) -> None:
    """Identifier maps (numerals) and one coloured glyph per category."""
    (folder / "identifiers").mkdir(parents=True, exist_ok=True)
    (folder / "symbols").mkdir(parents=True, exist_ok=True)
    for i in range(100):
        img = Image.new("RGB", (size, size), "white")
        ImageDraw.Draw(img).text((4, 8), f"{i:02d}", fill="black")
        img.save(folder / "identifiers" / f"{i:03d}.png")
    rng = np.random.default_rng(1)
    for c in range(len(categories())):
        img = Image.new("RGB", (size, size), "white")
        color = tuple(int(v) for v in rng.integers(0, 255, 3))
        x0, y0 = (int(v) for v in rng.integers(2, 12, 2))
        ImageDraw.Draw(img).ellipse((x0, y0, x0 + 12, y0 + 12), fill=color)
        img.save(folder / "symbols" / f"{c:03d}.png")

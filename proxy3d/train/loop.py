"""One curriculum stage under DeepSpeed: build or load the model, train ``steps`` steps with periodic
checkpoints (resuming from the last one after a kill), write the stage checkpoint folder and probes.

Resume is exact: weights, optimizer, scheduler and RNG come from the DeepSpeed checkpoint and batches are
a pure function of the step (``CurriculumData``), so a killed-and-resumed stage ends with the same
weights as an uninterrupted one (CPU, same seed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from proxy3d.config import Params, StageParams, section_dict
from proxy3d.io import atomic_write_text, sha256_file
from proxy3d.model import text_tokenizer as tt
from proxy3d.model.build import create_model, load_model_dir, save_model_dir
from proxy3d.model.inputs import Example, SceneInput, TextCodec
from proxy3d.model.proxy_vlm import Proxy3DModel
from proxy3d.tracking import Tracker
from proxy3d.train import engine as ds
from proxy3d.train.data import CurriculumData, load_objects, load_rows
from proxy3d.train.probes import run_probes
from proxy3d.types import load_proxies
from proxy3d.vocab import categories

log = logging.getLogger(__name__)
TEMPLATE_TEXT = ("Question: What is ? Answer: Which object is the ? Where is ? x y z Which object is closest to ? "
                 "closest How far is from ? How big is ? Situation: Options: 0.1 1.2 2.3 3.4 4.5 5.6 6.7 7.8 8.9 9.0")


@dataclass
class StagePaths:
    spacespan: Path = Path("artifacts/spacespan")
    symbols: Path = Path("artifacts/symbols")
    proxies: Path = Path("artifacts/proxies")
    checkpoints: Path = Path("artifacts/checkpoints")


def stage_params(params: Params, stage: int) -> StageParams:
    if stage not in (1, 2, 3, 4):
        raise ValueError(f"--stage {stage}: the curriculum has stages 1, 2, 3, 4")
    return getattr(params, f"train_stage{stage}")


def tokenizer_texts(spacespan: Path, objects: dict) -> list[str]:
    """SpaceSpan train text (all stages) + object labels + the templated questions' words."""
    texts = [TEMPLATE_TEXT] * 4
    for st in (1, 2, 3, 4):
        df = load_rows(spacespan, st, "train")
        for col in ("question", "situation"):
            if col in df.columns:
                texts += [str(x) for x in df[col].dropna()]
        for col in ("answers", "options"):
            if col in df.columns:
                texts += [str(a) for xs in df[col].dropna() for a in xs]
    texts += [lab for split in objects.values() for o in split.values() for lab in o.labels] * 2
    texts += list(categories()) * 2
    return texts


def proxy_loader(proxies_dir: Path) -> Callable[[str], SceneInput | None]:
    cache: dict[str, SceneInput | None] = {}

    def get(scene_id: str) -> SceneInput | None:
        if scene_id not in cache:
            path = Path(proxies_dir) / f"{scene_id}.safetensors"
            cache[scene_id] = SceneInput.from_proxies(load_proxies(path)) if path.exists() else None
            if cache[scene_id] is None:
                log.warning("no proxies for scene %s (%s): its stage-4 rows are skipped", scene_id, path)
        return cache[scene_id]

    return get


def _model_for_stage(stage: int, params: Params, paths: StagePaths, objects: dict) -> tuple[Any, Any]:
    if stage == 1:
        tok = tt.build_text_tokenizer(tokenizer_texts(paths.spacespan, objects), params.model.vocab_size,
                                      params.model.tokenizer)
        return create_model(params.model, tok, paths.symbols), tok
    model, tok, _ = load_model_dir(paths.checkpoints / f"stage{stage - 1}")
    return model, tok


def input_signature(paths: StagePaths, stage: int) -> dict[str, list[tuple[str, int, int]]]:
    """(file, size, mtime_ns) of everything stage ``stage`` reads: SpaceSpan, symbols, the proxies (stage 4) and
    the previous stage's checkpoint. Part of the resume fingerprint, so a killed stage that DVC reruns after an
    upstream stage changed starts over instead of continuing weights built on the old inputs (a copied input
    also changes its mtime: that restarts the stage, it never resumes from other inputs)."""
    def files(root: Path, skip: str | None = None) -> list[tuple[str, int, int]]:
        root = Path(root)
        out = []
        for f in sorted(root.rglob("*")) if root.is_dir() else []:
            rel = f.relative_to(root)
            if f.is_file() and (skip is None or rel.parts[0] != skip):
                st = f.stat()
                out.append((rel.as_posix(), int(st.st_size), int(st.st_mtime_ns)))
        return out

    sig = {"spacespan": files(paths.spacespan), "symbols": files(paths.symbols)}
    if stage == 4:
        sig["proxies"] = files(paths.proxies)
    if stage > 1:
        sig["previous"] = files(Path(paths.checkpoints) / f"stage{stage - 1}", skip="ds")
    return sig


def source_signature(root: Path = Path(__file__).resolve().parents[1]) -> str:
    """sha256 over the sorted paths and contents of the ``.py`` files under ``root/model`` and ``root/train``:
    the code that decides what a training step computes. Part of the resume fingerprint, so a stage killed before
    a code change does not continue its weights under the new code."""
    h = hashlib.sha256()
    for f in sorted(p for sub in ("model", "train") for p in (Path(root) / sub).rglob("*.py")):
        data = f.read_bytes()
        h.update(f"{f.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def check_xy_pe_init(value: Any, stage: int) -> tuple[float, float]:
    """``train_stage<N>.xy_pe_init`` as (sigma, norm), or a ValueError that names it."""
    try:
        sigma, norm = (float(v) for v in value)
    except (TypeError, ValueError):
        sigma = norm = -1.0
    if sigma < 0 or norm < 0 or (norm > 0) != (sigma > 0):
        raise ValueError(f"train_stage{stage}.xy_pe_init={value!r} (params.yaml): give [sigma, norm], both > 0 (F's "
                         "frequencies in cycles/m and its spread, e.g. [0.1, 2.0]), or [0, 0] to keep F")
    return sigma, norm


def set_phase(engine: Any, model: Proxy3DModel, step: int, sp: StageParams) -> float:
    """Stage 2 with ``pointer_steps``: before ``steps`` the pointer head is off and its group (the last) at lr 0;
    after, only the head trains (``pointer_mode`` "only", every other group at lr 0, the head at ``pointer_lr``).
    Set before every optimizer step (the schedule rewrites the lrs after each). Returns the phase's trained lr."""
    groups = engine.optimizer.param_groups
    if step < sp.steps:
        model.pointer_mode = "off"
        groups[-1]["lr"] = 0.0
        return float(groups[0]["lr"])
    model.pointer_mode = "only"
    for g in groups[:-1]:
        g["lr"] = 0.0
    groups[-1]["lr"] = sp.pointer_lr
    return sp.pointer_lr


def stage_dir(checkpoints: Path, stage: int, blind: bool = False) -> Path:
    """Where stage ``stage`` writes its checkpoint: ``<checkpoints>/stage<N>``, or ``stage4_blind`` for the blind
    baseline."""
    return Path(checkpoints) / (f"stage{stage}_blind" if blind else f"stage{stage}")


def save_stage_model(engine: Any, tok: Any, out_dir: Path, meta: dict[str, Any], rank: int) -> None:
    """The consolidated checkpoint folder, written by rank 0; every rank calls it (under ZeRO-3 the partitioned
    weights are gathered first, a collective)."""
    module = engine.module
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            if rank == 0:
                save_model_dir(module, tok, out_dir, meta)
    elif rank == 0:
        save_model_dir(module, tok, out_dir, meta)


def probe_model(engine: Any, saved: Path) -> Proxy3DModel:
    """The model to probe (rank 0): the engine's module, or under ZeRO-3 a plain copy reloaded from ``saved``
    (written by :func:`save_stage_model`). A ZeRO-3 module holds empty partitions outside its forward, and its
    hooks gather and release weights per submodule call (collectives the other ranks do not join), even inside
    ``GatheredParameters``; the reloaded copy is also exactly what the stage ships."""
    if engine.zero_optimization_stage() != 3:
        return engine.module
    dtype = torch.bfloat16 if engine.bfloat16_enabled() else None
    return load_model_dir(saved, engine.device, dtype)[0]


def train_stage(stage: int, params: Params, paths: StagePaths, tracker: Tracker,
                stop_after: int | None = None, blind: bool = False) -> dict[str, float]:
    """Train one stage into ``paths.checkpoints/stage<N>/``; ``stop_after`` stops early like a kill (tests).

    ``blind`` (stage 4 only): the same stage with every scene emptied (no visual token in any sequence), into
    ``stage4_blind/``: the evaluation's blind baseline, a model trained on the same questions without seeing
    the scene.
    """
    if blind and stage != 4:
        raise ValueError(f"blind training is a stage-4 baseline; got --stage {stage}")
    sp, tp = stage_params(params, stage), params.train
    device = ds.resolve_device(tp.device)
    if device == "cpu" and tp.threads > 0:  # 2 on an idle 2-core machine: 1.64x faster than 1 (bench/threads.py)
        torch.set_num_threads(tp.threads)
    ds.init_distributed(device)
    torch.manual_seed(tp.seed + stage)
    objects = load_objects(paths.spacespan / "objects.parquet")
    model, tok = _model_for_stage(stage, params, paths, objects)
    scene_inputs = proxy_loader(paths.proxies) if stage == 4 else None
    if stage == 4:
        first = next(iter(sorted(Path(paths.proxies).glob("*.safetensors"))), None)
        if first is None:
            raise FileNotFoundError(f"{paths.proxies}: no proxies; run `proxy3d proxies` before stage 4")
        model.ensure_projector(int(load_proxies(first).features.shape[1]))
    for p in model.pe.fourier.parameters():  # F(x, y) trained from stage 2 on: learning it in stage 1 kept the
        p.requires_grad_(sp.train_xy_pe)    # tiny model from ever matching identifiers (label accuracy at chance)
    sigma, norm = check_xy_pe_init(sp.xy_pe_init, stage)
    if norm:  # a resumed stage then loads its own F from the checkpoint
        model.pe.fourier.reinit(sigma, norm, torch.Generator().manual_seed(tp.seed + 100 * stage))
    if sp.pointer_steps < 0 or (sp.pointer_steps and stage != 2):
        raise ValueError(f"train_stage{stage}.pointer_steps={sp.pointer_steps}: the pointer phase is part of stage 2 "
                         "(params.yaml train_stage2.pointer_steps >= 0); set it to 0 here")
    if sp.pointer_steps:
        model.ensure_pointer()
    rank = int(torch.distributed.get_rank())
    data = CurriculumData(stage, objects.get("train", {}), {k: load_rows(paths.spacespan, k, "train")
                          for k in range(1, stage + 1)}, scene_inputs, sp.steps, tp.seed, sp.mix_previous,
                          sp.turns, sp.max_objects, rank, sp.vocab_share, sp.simplified_share,
                          tuple(sp.simplified_tokens), sp.real_turns, sp.refer_share, sp.spatial_share, sp.augment)
    codec = TextCodec(tok, tt.proxy_token_id(tok))
    # with a pointer phase the head is the last group: each phase sets the lr of its groups (set_phase)
    scaled = {"projector": sp.projector_lr_scale, **({"pointer": 1.0} if sp.pointer_steps else {})}
    engine = ds.initialize(model, ds.ds_config(tp, sp, device), ds.param_groups(model, sp.lr, scaled))
    total = sp.steps + sp.pointer_steps
    out_dir = stage_dir(paths.checkpoints, stage, blind)
    ckpt_dir = out_dir / "ds"
    fingerprint = json.dumps({"model": section_dict(params.model), "train": section_dict(tp), "stage": section_dict(sp),
                              "blind": blind, "inputs": input_signature(paths, stage),
                              "deepspeed_config": sha256_file(tp.deepspeed_config),
                              "code": source_signature()}, sort_keys=True)
    stamp = ckpt_dir / "fingerprint.json"
    if (ckpt_dir / "latest").exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        log.warning("%s was written with other params or inputs: not resuming from it (the fingerprint covers "
                    "params, inputs, the DeepSpeed config file and the model/train code)", ckpt_dir)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    if rank == 0:  # before the first checkpoint: a folder with a checkpoint always has its fingerprint
        atomic_write_text(stamp, fingerprint)
        # the folder persists across runs (DVC persist): its old model is no longer this stage's output, and a run
        # killed before its own save must not leave a folder that reads as finished
        (out_dir / "bundle.json").unlink(missing_ok=True)
    start = ds.resume(engine, ckpt_dir)
    meta = {"stage": stage, "model": section_dict(params.model), "steps": sp.steps, "pointer_steps": sp.pointer_steps,
            "seed": tp.seed, "blind": blind}
    losses, speeds, t_start = [], [], time.perf_counter()
    engine.train()
    for step in tqdm(range(start, total), desc=f"stage {stage}", initial=start, total=total, mininterval=5):
        examples = data.batch(step, sp.batch_size)
        if blind:
            examples = [Example(SceneInput.empty(e.scene.scene_id), e.turns) for e in examples]
        b = codec.collate(examples, sp.max_length)
        lr = set_phase(engine, model, step, sp) if sp.pointer_steps else float(engine.get_lr()[0])
        t0 = time.perf_counter()
        loss = engine(b.input_ids.to(engine.device), b.attention_mask.to(engine.device), b.labels.to(engine.device), b.scenes)
        engine.backward(loss)
        engine.step()
        tps = b.num_tokens / max(time.perf_counter() - t0, 1e-9)
        losses.append(float(loss.detach()))
        speeds.append(tps)
        if (step + 1) % max(tp.log_every, 1) == 0 or step == start:
            tracker.log_metrics({"loss": losses[-1], "lr": lr, "tokens_per_s": tps}, step=step + 1)
            log.info("stage %d step %d/%d loss %.4f lr %.2e %.0f tok/s", stage, step + 1, total, losses[-1], lr, tps)
        if tp.probe_every and stage in (1, 2) and (step + 1) % tp.probe_every == 0 and objects.get("val"):
            probe_dir = ckpt_dir / "probe_model"  # ZeRO-3 only: the consolidated weights the probes reload
            if engine.zero_optimization_stage() == 3:
                save_stage_model(engine, tok, probe_dir, meta, rank)
            if rank == 0:
                probe = run_probes(probe_model(engine, probe_dir), codec, stage, objects["val"],
                                   objects.get("train", {}), tp.seed)
                shutil.rmtree(probe_dir, ignore_errors=True)
                tracker.log_metrics({f"probe.{k}": v for k, v in probe.items()}, step=step + 1)
                log.info("stage %d step %d probes %s", stage, step + 1, {k: round(v, 3) for k, v in probe.items()})
        if (step + 1) % max(tp.checkpoint_every, 1) == 0 and step + 1 < total:
            ds.save(engine, ckpt_dir, step + 1)
        if stop_after is not None and step + 1 >= stop_after:
            return {"stopped_at": float(step + 1)}
    seconds = time.perf_counter() - t_start
    model.pointer_mode = "on"
    metrics: dict[str, float] = {"stage": float(stage), "steps": float(sp.steps), "train_seconds": seconds,
                                 "final_loss": float(np.mean(losses[-10:])) if losses else float("nan"),
                                 "tokens_per_s": float(np.mean(speeds)) if speeds else 0.0}
    save_stage_model(engine, tok, out_dir, meta, rank)
    if rank == 0 and stage in (1, 2, 4) and objects.get("val") and not blind:
        t0 = time.perf_counter()
        metrics.update(run_probes(probe_model(engine, out_dir), codec, stage, objects["val"],
                                  objects.get("train", {}), tp.seed, scene_input=scene_inputs))
        metrics["probe_seconds"] = time.perf_counter() - t0
    tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
    if rank == 0:  # last: a stage that fails before here (probes included) reruns from its last checkpoint
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return metrics

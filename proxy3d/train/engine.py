"""DeepSpeed setup: process group (gloo on CPU), config from ``configs/deepspeed/*.json`` filled from params,
and checkpoint save/resume (weights, optimizer, scheduler, RNG, data position = step)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import torch

from proxy3d.config import StageParams, TrainParams

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available, else cpu. ``cpu`` also forces DeepSpeed's CPU accelerator."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"train.device={device!r}: use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible; set train.device: auto or cpu")
    return device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _venv_ninja_first() -> None:
    """Put this interpreter's bin dir first on PATH when it holds ninja. DeepSpeed JIT-builds its CPU collective
    (shm_comm) with the first ninja on PATH; ``scripts/install.sh`` prebuilt it with the venv's, and another
    ninja logs other command hashes and rebuilds it (24-80 s per stage) when ``.venv/bin/proxy3d`` runs without
    the venv activated."""
    venv_bin = Path(sys.executable).parent
    ninja = venv_bin / "ninja"
    if ninja.exists() and shutil.which("ninja") != str(ninja):
        os.environ["PATH"] = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"


def init_distributed(device: str) -> None:
    """Single-process defaults (RANK=0, WORLD_SIZE=1, a free port) unless a launcher set them."""
    if device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        _venv_ninja_first()
    for k, v in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(k, v)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    import deepspeed

    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="gloo" if device == "cpu" else "nccl", verbose=False)


def ds_config(tp: TrainParams, sp: StageParams, device: str) -> dict[str, Any]:
    """The JSON config with batch size, lr, schedule and precision taken from params. One loop step is one
    optimizer step, so a config must not accumulate gradients (``gradient_accumulation_steps`` 1)."""
    path = Path(tp.deepspeed_config)
    if not path.exists():
        raise FileNotFoundError(f"train.deepspeed_config={tp.deepspeed_config!r} does not exist; "
                                "use configs/deepspeed/zero2.json (default) or zero3_offload.json")
    cfg = json.loads(path.read_text())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accum = cfg.get("gradient_accumulation_steps", 1)
    # with accumulation DeepSpeed steps the optimizer and schedule once per `accum` loop steps, and a checkpoint
    # taken between two of them drops the gradients accumulated so far (a resumed stage differs)
    if accum != 1:
        raise ValueError(f"{path}: gradient_accumulation_steps={accum!r}, but the training loop takes one optimizer "
                         "step per batch and only supports 1; set it to 1 and raise train_stage<N>.batch_size "
                         "(params.yaml) for a larger batch")
    cfg["train_micro_batch_size_per_gpu"] = sp.batch_size
    cfg["train_batch_size"] = sp.batch_size * world
    cfg.setdefault("optimizer", {"type": "AdamW", "params": {}})["params"]["lr"] = sp.lr
    if device == "cpu":
        cfg["optimizer"]["params"]["torch_adam"] = True  # no fused CUDA Adam on CPU
    cfg["scheduler"] = {"type": "WarmupCosineLR", "params": {
        **cfg.get("scheduler", {}).get("params", {}), "total_num_steps": max(sp.steps, 1),
        "warmup_num_steps": max(1, min(sp.warmup_steps, sp.steps - 1)), "warmup_type": "linear"}}
    bf16 = tp.precision == "bf16" or (tp.precision == "auto" and device == "cuda")
    cfg["bf16"] = {"enabled": bool(bf16)}
    cfg.pop("fp16", None)
    if device == "cpu" and cfg.get("zero_optimization", {}).get("stage", 0) == 3:
        for k in ("offload_optimizer", "offload_param"):
            cfg["zero_optimization"].get(k, {}).pop("pin_memory", None)
    return cfg


def save(engine: Any, ckpt_dir: Path, step: int) -> None:
    """DeepSpeed checkpoint ``step<N>`` (+ RNG and data position); older tags are removed."""
    state = {"step": step, "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    tag = f"step{step}"
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=state)
    if int(os.environ.get("RANK", "0")) == 0:
        for d in Path(ckpt_dir).glob("step*"):
            if d.is_dir() and d.name != tag:
                shutil.rmtree(d, ignore_errors=True)


def _deepspeed_safe_globals() -> list[Any]:
    """The DeepSpeed classes its checkpoints pickle (found with ``torch.serialization.
    get_unsafe_globals_in_checkpoint`` on ZeRO-2 and ZeRO-3 + offload checkpoints; the loss scalers for fp16)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def safe_checkpoint_load(path: str, map_location: Any = None) -> Any:
    """``torch.load(..., weights_only=True)`` for DeepSpeed checkpoint files: DeepSpeed's own checkpoint engine
    loads with ``weights_only=False``, which would run any pickled code in a checkpoint folder."""
    import pickle

    with torch.serialization.safe_globals(_deepspeed_safe_globals()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            raise RuntimeError(f"{path}: refusing to unpickle it with weights_only=False ({e}); if it is a trusted "
                               "DeepSpeed checkpoint of another version, delete the checkpoint folder to restart "
                               "the stage") from None


def resume(engine: Any, ckpt_dir: Path) -> int:
    """Load the latest checkpoint in ``ckpt_dir`` if there is one (every file through
    :func:`safe_checkpoint_load`); returns the step to continue from."""
    if not (Path(ckpt_dir) / "latest").exists():
        return 0
    engine.checkpoint_engine.load = safe_checkpoint_load
    path, state = engine.load_checkpoint(str(ckpt_dir), load_optimizer_states=True, load_lr_scheduler_states=True)
    if path is None:
        raise RuntimeError(f"{ckpt_dir}: 'latest' names a checkpoint that could not be loaded; delete {ckpt_dir} "
                           "to restart the stage")
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    log.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"])


def param_groups(model: torch.nn.Module, lr: float, scaled: dict[str, float]) -> list[dict[str, Any]]:
    """Optimizer groups of the trainable parameters: those of each submodule named in ``scaled`` (e.g.
    ``{"projector": 0.1}``) at ``lr`` times its factor, the rest at the config's lr. Empty groups are left out."""
    taken: set[int] = set()
    groups = []
    for name, factor in scaled.items():
        sub = getattr(model, name, None)
        ps = [p for p in (sub.parameters() if sub is not None else []) if p.requires_grad and id(p) not in taken]
        taken.update(id(p) for p in ps)
        if ps:
            groups.append({"params": ps, "lr": lr * factor})
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    return ([{"params": rest}] if rest else []) + groups


def initialize(model: torch.nn.Module, config: dict[str, Any], groups: list[dict[str, Any]] | None = None) -> Any:
    """``deepspeed.initialize`` on the trainable parameters (or on ``groups``, see :func:`param_groups`); the
    scheduler starts at iteration 0 so the first step does not run at lr 0 (DeepSpeed's schedulers report 0
    before their first ``step``; they scale every group's own lr)."""
    import deepspeed

    params = groups if groups is not None else [p for p in model.parameters() if p.requires_grad]
    engine, _, _, sched = deepspeed.initialize(model=model, config=config, model_parameters=params)
    if sched is not None:
        sched.step(0)
    return engine

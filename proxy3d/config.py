"""Typed schema of ``params.yaml``.

Each top-level section of ``params.yaml`` maps 1:1 to a dataclass below and to one pipeline step
(DVC stage, stage module, Prefect task and MLflow child run share its name). Loading goes through
OmegaConf structured configs, so an unknown key or a wrong type fails at start with the key's name
and the file it came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


@dataclass
class DataParams:
    """Where raw inputs live and how frames are sampled from them (shared by every reader)."""

    root: str = "data"  # data/scenes/<scene_id>/ (ScanNet export layout), data/annotations/<source>/
    frames: int = 32  # N frames sampled uniformly from each scene / .sens / video
    skip_invalid_frames: bool = False  # skip and count frames with bad pose/depth instead of failing


@dataclass
class SynthParams:
    """Deterministic synthetic ScanNet-layout world (``proxy3d synth data``)."""

    scenes: int = 12
    seed: int = 0
    frames: int = 32
    width: int = 320
    height: int = 240
    val_fraction: float = 0.25
    min_objects: int = 10
    max_objects: int = 24


@dataclass
class PerceptionParams:
    """Triplets stage: 2D encoder, geometry backend and mask backend."""

    encoder: str = "efficientnet_lite0"  # efficientnet_lite0 | qwen2_5_vl
    encoder_checkpoint: str = ""  # local Qwen2.5-VL checkpoint dir for qwen2_5_vl ("" = tiny random config)
    input_height: int = 240
    input_width: int = 320
    geometry: str = "depth"  # depth | vggt
    vggt_checkpoint: str = ""  # local VGGT checkpoint (model.pt) for geometry=vggt
    masks: str = "gt"  # gt | sam2
    sam2_config: str = "configs/sam2.1/sam2.1_hiera_t.yaml"
    sam2_checkpoint: str = ""  # local SAM 2 checkpoint for masks=sam2
    sam2_points_per_side: int = 32  # SAM 2 automatic mask generator point grid (per side)
    assoc_voxel: float = 0.05  # voxel size (m) for cross-frame mask association
    assoc_iou: float = 0.25  # voxel-set IoU above which two masks are the same instance
    assoc_containment: float = 0.8  # ... or share of the smaller mask's voxels inside the other (partial views)
    batch_size: int = 8
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class LabelNoiseParams:
    """Noise model imitating a real segmenter, applied to ground-truth labels for the noisy evaluation."""

    boundary_share: float = 0.3  # share of patches near another object that take its label
    boundary_radius: float = 0.15  # metres: "near" for the boundary rule
    merge_small_share: float = 0.3  # share of small objects merged into their support
    small_volume: float = 0.02  # m^3: objects below this are "small"
    drop_share: float = 0.1  # share of scattered patches that lose their label
    seed: int = 0


@dataclass
class ProxiesParams:
    """Proxy tokenizer: grouping, allocation, k-means, BFS order; and its evaluation grid."""

    budget: int = 700
    method: str = "semantic"  # semantic | global_kmeans | uniform | voxel | fps
    min_per_group: int = 1
    per_object_cap: int = 0  # 0 = no cap
    background_voxel: float = 0.5  # metres: unlabelled patches are grouped by this voxel
    # metres: mask pieces farther than this from the rest of their mask ... (at least; raised to 6 patch spacings on
    # coarse grids, grouping.detach_outliers; on the default grid 0.1 lifts semantic Acc@0.5 from 58.4 at 0.25 to 67.8)
    outlier_radius: float = 0.1
    outlier_min_share: float = 0.1  # ... and smaller than this share of its largest piece become unlabelled
    # a mask patch whose cell (edge: this many patch spacings) and the 26 around it hold fewer same-label patches than
    # sparse_min_share of its label's median becomes unlabelled (grouping.detach_sparse: mixed pixels at silhouettes)
    sparse_spacings: float = 3.0
    sparse_min_share: float = 0.2
    label_vote_voxel: float = 0.05  # metres: multi-view label vote per voxel before grouping (0 disables)
    label_vote_keep: float = 0.34  # a patch whose label holds < this share of its voxel ...
    label_vote_take: float = 0.66  # ... takes the label holding >= this share (semantic only)
    kmeans_iters: int = 6  # Lloyd iterations: batched k-means inertia is within ~4% of 20 iterations (faiss at 20: ~4.5%)
    kmeans_backend: str = "batched"  # batched (all groups at once, numpy) | faiss (per group; GPU if faiss-gpu)
    # Lloyd iterations see at most this many points per cluster (an even sample along each group's Z-order curve;
    # the rest are assigned in two passes after): denser patch grids cost two passes more, not 6. 0 = every point
    kmeans_sample: int = 64
    knn: int = 6  # neighbours in the BFS graph (and candidate centroids per point in batched k-means)
    seed: int = 0
    eval_budgets: list[int] = field(default_factory=lambda: [450, 700, 1000])
    eval_methods: list[str] = field(
        default_factory=lambda: ["semantic", "global_kmeans", "uniform", "voxel", "fps"]
    )
    # oracle grounding targets objects, not room structure (like ScanRefer's targets)
    eval_exclude_labels: list[str] = field(default_factory=lambda: ["wall", "floor", "ceiling"])
    label_noise: LabelNoiseParams = field(default_factory=LabelNoiseParams)


@dataclass
class SpaceSpanParams:
    """SpaceSpan assembly with PySpark."""

    master: str = "local[2]"
    driver_memory: str = "2g"
    shuffle_partitions: int = 4  # spark.sql.shuffle.partitions (raise on a cluster)
    # source name -> path relative to data.root (or absolute); "" disables the source
    sources: dict[str, str] = field(
        default_factory=lambda: {
            "scanrefer": "annotations/scanrefer",
            "multi3drefer": "annotations/multi3drefer",
            "scanqa": "annotations/scanqa",
            "sqa3d": "annotations/sqa3d",
            "scan2cap": "annotations/scan2cap",
            "mmscan": "annotations/mmscan",
            "vsibench": "annotations/vsibench",
        }
    )
    required_sources: list[str] = field(default_factory=lambda: ["scanrefer", "scanqa"])
    val_fraction: float = 0.25
    seed: int = 0
    coord_precision: int = 2
    stage1_per_object: int = 2
    stage2_per_object: int = 2


@dataclass
class SymbolsParams:
    """Symbol maps (Stable Diffusion pipeline) and identifier maps (drawn numerals)."""

    pipeline: str = "tiny"  # tiny (random-init, offline) | path to a local Stable Diffusion checkpoint dir
    prompt: str = "a simple flat icon of a {category}, white background"
    render_size: int = 64  # SD output side (multiple of 8); use 512 with a real SD 1.x checkpoint
    icon_size: int = 28
    steps: int = 2
    guidance_scale: float = 1.0
    seed: int = 0
    num_identifiers: int = 100
    device: str = "auto"
    glyph: str = "auto"  # auto (on for tiny: random-init SD has no semantics) | on | off
    glyph_weight: float = 0.7  # share of the per-category glyph in a blended icon


@dataclass
class ModelParams:
    """The VLM: Qwen2.5-VL architecture with proxy injection."""

    preset: str = "tiny"  # tiny | small | 7b
    checkpoint: str = ""  # local Qwen2.5-VL checkpoint dir (7b); "" = random init from the preset
    tokenizer: str = ""  # local Qwen tokenizer dir; "" = byte-level BPE trained on SpaceSpan text
    vocab_size: int = 2048  # BPE vocabulary size when training the tokenizer
    pe_fourier_features: int = 16
    pe_height_scale: float = 1.0
    qk_identity_init: float = 0.5  # random init only: query/key weights start at this x identity (0 = plain init)
    ov_identity_init: float = 0.5  # random init only: value/output weights start at this x identity (0 = plain init)
    tie_embeddings: bool = True  # random init only: the LM head is the input embedding (copying = identity)
    embed_init_std: float = 0.1  # random init only: token embedding init std (the scale of the reference embeddings)
    label_text_tie: float = 1.0  # semantic reference += this x mean text embedding of the category name (0 = off)
    scene_query_bias: float = 12.0  # random init only: query bias toward the proxy marker, per head (0 = off)
    # each <OBJm> text token += this x F(x, y) of object m's centre: the asked object's position on the token that
    # predicts the answer (F is 0 in stage 1, so stage 1 is unchanged; with 0 the stage-2 pointer stayed at chance)
    direct_position: float = 1.0


@dataclass
class TrainParams:
    """Settings shared by the four curriculum stages."""

    deepspeed_config: str = "configs/deepspeed/zero2.json"
    device: str = "auto"
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    probe_every: int = 0  # stage 1/2: val probes every N steps to tracking (0 = only at the end)
    threads: int = 2  # torch CPU threads (0 = torch default): 2 = both cores of the reference machine; use 1 when
    # another process keeps a core busy (2 threads then ran 1.75x slower than 1). The count changes float rounding.


@dataclass
class StageParams:
    """One curriculum stage."""

    steps: int = 200
    lr: float = 2e-3
    batch_size: int = 8
    warmup_steps: int = 50
    mix_previous: float = 0.3  # share of earlier-stage items mixed into this stage
    max_length: int = 96  # text tokens per sequence (visual tokens not counted); extra turns are dropped
    turns: int = 8  # questions per scene in one sequence (templated stages 1-3)
    max_objects: int = 40  # stage-1 scene-size warm-up grows from 1 to this many objects
    vocab_share: float = 0.0  # stage 1: share of objects given a random category of the whole vocabulary
    train_xy_pe: bool = True  # train the floor-plane Fourier PE term F(x, y); off = it stays 0 (zero-init)
    # [sigma, norm]: at the stage's start F(x, y) gets random frequencies of std sigma cycles/m and a random output
    # layer scaled so F varies by norm across a 6 m room ([0, 0] = keep F). The zero-init F and the init's 0.5
    # cycles/m left the stage-2 pointer at chance; 0.05-0.2 cycles/m and norm 2 reached 2.3-3x (bench/nearest.py)
    xy_pe_init: list[float] = field(default_factory=lambda: [0.0, 0.0])
    # stage 2: steps after `steps` that train only the pointer head (model.pointer, created at the identity) on
    # stage-2 questions (~65% nearest-object ones) about the train scenes, moved as with `augment`, the rest of the
    # model frozen and run without gradient; 0 = no pointer head. Trained with the whole model it stayed at chance
    pointer_steps: int = 0
    pointer_lr: float = 3e-3  # constant lr of the pointer phase (no warmup or decay)
    simplified_share: float = 0.0  # stage 4: share of SpaceSpan items shown on a simplified scene (8 turns, cheap)
    # visual tokens of a simplified scene, drawn from [lo, hi]: each object's token repeated in proportion to its
    # surface area, as real proxies are (train.data.spread_scene); [0, 0] = one token per object
    simplified_tokens: list[int] = field(default_factory=lambda: [0, 0])
    # stage 4: questions per real-proxy sequence (the 700 proxies are most of a sequence's cost, so more turns
    # are nearly free supervision; turns beyond max_length text tokens are dropped)
    real_turns: int = 1
    # stage 3: share of sequences of templated referring expressions ("the lamp is next to the cup." -> "lamp
    # <OBJ###>"): the target first, an anchor after it
    refer_share: float = 0.0
    # stage 4: share of sequences of templated VSI-Bench questions (counting, distance, size, room size, relative
    # distance and direction) from the object table, on real proxies or (simplified_share of them) simplified scenes
    spatial_share: float = 0.0
    # stage 2: every scene moved rigidly in the floor plane (random rotation about z, mirrored half the time) with a
    # random half-to-all subset of its objects (train.data.augment_scene), so positions never repeat. After 2,000
    # steps the val "Where is" probe reached 74% with it vs 46% without; at 200-700 steps it learns slower (16% vs
    # 40% at 700), so it is off by default
    augment: bool = False
    # lr multiplier of the proxy-feature projector (created in stage 4): at the full lr its output grew to ~4x the
    # identifier/category references within 100 steps and the model read no identifier on real proxies
    projector_lr_scale: float = 1.0


# evaluate.box_source: what a generated <OBJxxx> is scored as (see EvaluateParams.box_source)
BOX_SOURCES = ("proxies", "gt")


@dataclass
class EvaluateParams:
    """Evaluation of the stage-4 model and baselines."""

    batch_size: int = 16
    max_new_tokens: int = 24
    budgets: list[int] = field(default_factory=lambda: [450, 700, 1000])
    baselines: list[str] = field(default_factory=lambda: ["blind", "random_object", "frequency", "global_kmeans"])
    seed: int = 0
    max_items_per_task: int = 0  # seeded sample of this many val items per task (0 = all)
    meteor: bool = True  # METEOR needs Java
    device: str = "auto"  # auto | cpu | cuda
    # paired-bootstrap resamples for the model-minus-baseline intervals in the report (0 = off): the default val
    # split has ~5 VSI-Bench items per question type, so most gaps there are noise
    bootstrap: int = 2000
    # VSI-Bench numeric probe: up to this many templated questions per kind (counting, absolute distance, object
    # size, room size) and val scene, from the object table, asked to the model, the blind model and the frequency
    # baseline and bootstrapped like the benchmarks (0 = off); the val split itself has only 3-10 per type
    spatial_probe: int = 40
    # what a generated <OBJxxx> is scored as in grounding and captions: "proxies" = the box of the points of the
    # proxies carrying identifier xxx (what the model's tokens hold; the tokenizer ablation shows in the scores, and
    # it works with sam2 masks, whose ids are not GT object ids), "gt" = the GT box of object xxx
    box_source: str = "proxies"


@dataclass
class TrackingParams:
    enabled: bool = True
    experiment: str = "proxy3d"


@dataclass
class Params:
    data: DataParams = field(default_factory=DataParams)
    synth: SynthParams = field(default_factory=SynthParams)
    perception: PerceptionParams = field(default_factory=PerceptionParams)
    proxies: ProxiesParams = field(default_factory=ProxiesParams)
    spacespan: SpaceSpanParams = field(default_factory=SpaceSpanParams)
    symbols: SymbolsParams = field(default_factory=SymbolsParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    train_stage1: StageParams = field(default_factory=lambda: StageParams(steps=1200, lr=1e-3, batch_size=16, train_xy_pe=False))  # 2e-3: seed 1 stayed at 12% grounding
    train_stage2: StageParams = field(default_factory=lambda: StageParams(steps=400, lr=1e-3, xy_pe_init=[0.1, 2.0],
                                                                          pointer_steps=400))
    train_stage3: StageParams = field(default_factory=lambda: StageParams(steps=100, lr=1e-3))
    train_stage4: StageParams = field(default_factory=lambda: StageParams(steps=100, lr=1e-3, batch_size=4, projector_lr_scale=0.1))
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)


class ParamsError(ValueError):
    """params.yaml (or an override) does not match the schema."""


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Load ``params.yaml`` into :class:`Params`; ``overrides`` are ``section.key=value`` strings.

    A missing file gives the defaults (so the library works without a checkout); a file that is not YAML, an
    unknown key, a wrong type or a value out of range raises :class:`ParamsError` naming the key and the file.
    """
    schema = OmegaConf.structured(Params)
    path = Path(path)
    if path.is_dir():
        raise ParamsError(f"{path} is a folder, not a params file; pass a YAML file such as "
                          f"{path / 'params.yaml'}")
    try:
        if path.exists():
            loaded = _read_yaml(path)
            _check_mappings(schema, loaded, str(path))
            schema = OmegaConf.merge(schema, loaded)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise ParamsError(
            f"{path}: invalid key '{key}': {_first_line(e)}; fix or remove it (see proxy3d/config.py for the schema)"
        ) from None
    try:
        if overrides:
            schema = OmegaConf.merge(schema, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise ParamsError(f"override {overrides}: invalid key '{key}': {_first_line(e)}") from None
    params: Params = OmegaConf.to_object(schema)  # type: ignore[assignment]
    _check_ranges(params, path, overrides or [])
    return params


def _read_yaml(path: Path) -> Any:
    """The file's YAML as an OmegaConf node ({} when empty); syntax and encoding errors name the file and
    line."""
    import yaml

    try:
        loaded = OmegaConf.load(path)
    except UnicodeDecodeError as e:
        raise ParamsError(f"{path}: not a UTF-8 text file (byte {e.start}: {e.reason}); params must be a "
                          "YAML text file like params.yaml") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or _first_line(e)
        raise ParamsError(f"{path}: not valid YAML ({where}{problem}); fix the syntax (see params.yaml "
                          "for the layout)") from None
    except OSError as e:
        raise ParamsError(f"{path}: cannot read it ({e.strerror}); check the file and its "
                          "permissions") from None
    return OmegaConf.create({}) if loaded is None else loaded


def _check_mappings(schema: Any, loaded: Any, source: str, prefix: str = "") -> None:
    """A section (or nested mapping such as ``spacespan.sources``) given as a scalar or list: OmegaConf's
    merge error names no key, so name it here."""
    if not OmegaConf.is_dict(loaded):
        raise ParamsError(f"{source}: the file must be a mapping of sections (data:, proxies:, ...), got "
                          f"{type(OmegaConf.to_container(loaded)).__name__}; see params.yaml for the layout")
    for key, value in loaded.items_ex(resolve=False):
        if key not in schema or not OmegaConf.is_dict(schema[key]):
            continue
        name = f"{prefix}{key}"
        if not OmegaConf.is_dict(value):
            shown = value if not OmegaConf.is_config(value) else OmegaConf.to_container(value)
            raise ParamsError(f"{source}: section '{name}' must be a mapping of keys "
                              f"(e.g. {name}: {{key: value}}), got {shown!r}")
        _check_mappings(schema[key], value, source, f"{name}.")


def _check_ranges(p: Params, path: Path, overrides: list[str]) -> None:
    """Values the types allow but the stages cannot use; the error names the key and where it was set."""

    def need(key: str, value: Any, ok: bool, rule: str) -> None:
        if ok:
            return
        given = [o for o in overrides if o.split("=", 1)[0].strip() == key]
        if given:
            raise ParamsError(f"override {given[-1]}: {key} must be {rule}; fix the override")
        if path.is_file():
            raise ParamsError(f"{path}: {key}={value} must be {rule}; change {key} in that file")
        raise ParamsError(f"{key}={value} (built-in default with overrides {overrides}) must be {rule}")

    need("data.frames", p.data.frames, p.data.frames >= 0, ">= 0 (0 = every frame)")
    for key, vf in (("synth.val_fraction", p.synth.val_fraction),
                    ("spacespan.val_fraction", p.spacespan.val_fraction)):
        need(key, vf, 0.0 <= vf <= 1.0, "between 0 and 1 (the share of scenes in the val split)")
    need("proxies.budget", p.proxies.budget, p.proxies.budget >= 1, ">= 1 (tokens per scene)")
    for key, budgets in (("proxies.eval_budgets", p.proxies.eval_budgets),
                         ("evaluate.budgets", p.evaluate.budgets)):
        need(key, budgets, all(b >= 1 for b in budgets), "a list of budgets >= 1 (tokens per scene)")
    need("evaluate.box_source", p.evaluate.box_source, p.evaluate.box_source in BOX_SOURCES,
         "'proxies' (boxes of the proxies carrying the identifier) or 'gt' (the GT box of that object id)")
    for n in (1, 2, 3, 4):
        s: StageParams = getattr(p, f"train_stage{n}")
        need(f"train_stage{n}.steps", s.steps, s.steps >= 1, ">= 1")
        need(f"train_stage{n}.batch_size", s.batch_size, s.batch_size >= 1, ">= 1")
        need(f"train_stage{n}.lr", s.lr, math.isfinite(s.lr) and s.lr > 0, "> 0 (learning rate)")


def section_dict(section: Any) -> dict[str, Any]:
    """A params section as a plain dict (for logging and hashing)."""
    return OmegaConf.to_container(OmegaConf.structured(section), resolve=True)  # type: ignore[return-value]


def flat_dict(section: Any, prefix: str = "") -> dict[str, Any]:
    """A params section flattened to ``a.b.c`` keys (for MLflow params)."""
    out: dict[str, Any] = {}

    def walk(obj: Any, pre: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{pre}{k}.")
        else:
            out[pre[:-1]] = obj

    walk(section_dict(section), prefix + "." if prefix else "")
    return out


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__

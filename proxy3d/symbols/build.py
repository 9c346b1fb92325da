"""Render every symbol map and identifier map into a folder, with a manifest; resumable.

Layout under ``out_dir``::

    symbols/<cid:03d>.png        one icon per category of proxy3d.vocab.categories() (213)
    identifiers/<id:03d>.png     numerals for <OBJ000> ... <OBJ099>
    manifest.json                settings + one entry per file (category/id, prompt, seed, sha256)

A file is skipped when it exists, its sha256 matches its manifest entry and the manifest was written
with the same settings; anything else (missing, corrupted, settings changed) is rendered again. The
manifest is rewritten every ``_FLUSH`` renders, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from proxy3d.config import SymbolsParams, section_dict
from proxy3d.io import atomic_write_bytes, sha256_file, write_json
from proxy3d.symbols import render
from proxy3d.symbols.tiny_pipeline import build_tiny_pipeline, load_pretrained_pipeline
from proxy3d.vocab import NUM_IDENTIFIERS, categories, identifier_token

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
_FLUSH = 32
# Settings that change pixels; 'device' does not invalidate files (CPU and GPU icons differ slightly,
# but a finished set is valid either way).
_PIXEL_KEYS = ("pipeline", "prompt", "render_size", "icon_size", "steps", "guidance_scale", "seed",
               "num_identifiers", "glyph", "glyph_weight")


@dataclass
class RenderStats:
    symbols_rendered: int = 0
    symbols_skipped: int = 0
    identifiers_rendered: int = 0
    identifiers_skipped: int = 0
    pipeline_seconds: float = 0.0
    render_seconds: float = 0.0
    total_bytes: int = 0

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = dict(self.__dict__)
        out["seconds_per_icon"] = self.render_seconds / max(1, self.symbols_rendered)
        out["files"] = (self.symbols_rendered + self.symbols_skipped + self.identifiers_rendered
                        + self.identifiers_skipped)
        return out


def validate(p: SymbolsParams) -> None:
    """Refuse params that cannot render, naming the key and the fix."""
    if not 0 < p.num_identifiers <= NUM_IDENTIFIERS:
        raise ValueError(f"symbols.num_identifiers={p.num_identifiers} must be in 1..{NUM_IDENTIFIERS} "
                         "(identifier tokens are <OBJ000>..<OBJ099>); fix params.yaml")
    if p.render_size <= 0 or p.render_size % 8:
        raise ValueError(f"symbols.render_size={p.render_size} must be a positive multiple of 8 "
                         "(Stable Diffusion's VAE downsamples by 8); e.g. 64 (tiny) or 512 (real checkpoint)")
    if p.icon_size <= 0:
        raise ValueError(f"symbols.icon_size={p.icon_size} must be positive (default 28)")
    if "{category}" not in p.prompt:
        raise ValueError(f"symbols.prompt {p.prompt!r} has no '{{category}}' placeholder; add one")
    if p.glyph not in ("auto", "on", "off"):
        raise ValueError(f"symbols.glyph={p.glyph!r}: choose auto | on | off")
    if not 0.0 <= p.glyph_weight <= 1.0:
        raise ValueError(f"symbols.glyph_weight={p.glyph_weight} must be in [0, 1]")


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"symbols.device={device!r} but no CUDA device is visible; use 'auto' or 'cpu'")
    return device


def _settings(p: SymbolsParams) -> dict[str, Any]:
    d = section_dict(p)
    return {k: d[k] for k in _PIXEL_KEYS}


def _load_manifest(path: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Entries of a previous manifest by file name, or {} when absent, unreadable or for other settings."""
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        entries = [*old["symbols"], *old["identifiers"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("%s is unreadable (%s); rendering everything again", path, e)
        return {}
    if old.get("version") != MANIFEST_VERSION or old.get("settings") != settings:
        log.info("%s was written with other settings; rendering everything again", path)
        return {}
    return {e["file"]: e for e in entries if isinstance(e, dict) and "file" in e and "sha256" in e}


class SymbolRenderer:
    """Renders the maps of one :class:`SymbolsParams` into ``out_dir`` (pipeline built only if needed)."""

    def __init__(self, p: SymbolsParams, out_dir: str | Path) -> None:
        validate(p)
        self.p = p
        self.out = Path(out_dir)
        self.settings = _settings(p)
        self.device = resolve_device(p.device)
        self.tiny = p.pipeline == "tiny"
        self.use_glyph = p.glyph == "on" or (p.glyph == "auto" and self.tiny)
        self._pipe: Any = None
        self.stats = RenderStats()

    def prompt(self, category: str) -> str:
        return self.p.prompt.format(category=category)

    def _pipeline(self) -> Any:
        if self._pipe is None:
            t0 = time.perf_counter()
            if self.tiny:
                prompts = [self.prompt(c) for c in categories()]
                with tempfile.TemporaryDirectory(prefix="proxy3d_clip_") as tmp:  # tokenizer files, read once
                    self._pipe = build_tiny_pipeline(prompts, self.p.seed, Path(tmp))
            else:
                self._pipe = load_pretrained_pipeline(self.p.pipeline, self.device)
            self._pipe.to(self.device)
            self.stats.pipeline_seconds = time.perf_counter() - t0
        return self._pipe

    def render_symbol(self, cid: int, category: str) -> bytes:
        """PNG bytes of the icon of category ``cid`` (seed = ``symbols.seed + cid``)."""
        generator = torch.Generator("cpu").manual_seed(self.p.seed + cid)
        pipe = self._pipeline()
        threads = 1 if self.tiny and self.device == "cpu" else torch.get_num_threads()
        with torch.inference_mode(), _torch_threads(threads):
            image = pipe(
                self.prompt(category), num_inference_steps=self.p.steps, guidance_scale=self.p.guidance_scale,
                height=self.p.render_size, width=self.p.render_size, generator=generator, output_type="np",
            ).images[0]
        if self.use_glyph:
            img = render.blend(image, render.glyph(cid, category, self.p.render_size), self.p.glyph_weight)
        else:
            img = render.to_image(image)
        return render.png_bytes(img, self.p.icon_size)

    def run(self) -> dict[str, Any]:
        """Render what is missing or invalid; write ``manifest.json``; return the manifest."""
        manifest_path = self.out / "manifest.json"
        previous = _load_manifest(manifest_path, self.settings)
        symbols = [{"category_id": cid, "category": c, "file": f"symbols/{cid:03d}.png",
                    "prompt": self.prompt(c), "seed": self.p.seed + cid} for cid, c in enumerate(categories())]
        identifiers = [{"id": i, "token": identifier_token(i), "file": f"identifiers/{i:03d}.png", "text": f"{i:03d}"}
                       for i in range(self.p.num_identifiers)]
        manifest = {"version": MANIFEST_VERSION, "settings": self.settings, "symbols": symbols,
                    "identifiers": identifiers, "pipeline_kind": "tiny" if self.tiny else "checkpoint",
                    "glyph_blended": self.use_glyph}
        self._render_all(manifest, previous, manifest_path)
        write_json(manifest_path, manifest)
        log.info("symbols: %d rendered, %d skipped; identifiers: %d rendered, %d skipped (%s)",
                 self.stats.symbols_rendered, self.stats.symbols_skipped, self.stats.identifiers_rendered,
                 self.stats.identifiers_skipped, self.out)
        return manifest

    def _render_all(self, manifest: dict[str, Any], previous: dict[str, dict[str, Any]], manifest_path: Path) -> None:
        items = [("symbols", e) for e in manifest["symbols"]] + [("identifiers", e) for e in manifest["identifiers"]]
        done = 0
        for kind, entry in tqdm(items, desc="symbols", unit="map", disable=None):
            path = self.out / entry["file"]
            old = previous.get(entry["file"])
            # reused only when the file is intact and was made for this very entry (category, prompt, seed, ...):
            # a reordered categories.txt keeps the file names but changes what each one must show
            same = old is not None and all(old.get(k) == v for k, v in entry.items() if k != "sha256")
            if same and path.is_file() and sha256_file(path) == old["sha256"]:
                entry["sha256"] = old["sha256"]
                self._count(kind, "skipped")
            else:
                data = self._render_entry(kind, entry)
                atomic_write_bytes(path, data)
                entry["sha256"] = hashlib.sha256(data).hexdigest()
                self._count(kind, "rendered")
                done += 1
                if done % _FLUSH == 0:
                    self._flush(manifest_path, manifest)
            self.stats.total_bytes += path.stat().st_size

    def _render_entry(self, kind: str, entry: dict[str, Any]) -> bytes:
        if kind == "identifiers":
            return render.png_bytes(render.identifier_image(entry["id"], self.p.icon_size), self.p.icon_size)
        self._pipeline()  # built outside the timer: render_seconds is pure rendering
        t0 = time.perf_counter()
        data = self.render_symbol(entry["category_id"], entry["category"])
        self.stats.render_seconds += time.perf_counter() - t0
        return data

    def _count(self, kind: str, what: str) -> None:
        name = f"{kind}_{what}"
        setattr(self.stats, name, getattr(self.stats, name) + 1)

    @staticmethod
    def _flush(path: Path, manifest: dict[str, Any]) -> None:
        """Partial manifest: only entries that already have a hash (what a resumed run may skip)."""
        partial = dict(manifest)
        for key in ("symbols", "identifiers"):
            partial[key] = [e for e in manifest[key] if "sha256" in e]
        write_json(path, partial)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads: the tiny pipeline's ops are so small that extra threads only
    contend (measured on 2 shared cores: 1.1 s vs 0.09 s per icon)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def render_maps(p: SymbolsParams, out_dir: str | Path) -> tuple[dict[str, Any], dict[str, float]]:
    """Render all maps for ``p`` into ``out_dir``; return (manifest, metrics)."""
    renderer = SymbolRenderer(p, out_dir)
    manifest = renderer.run()
    return manifest, renderer.stats.metrics()

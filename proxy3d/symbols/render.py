"""Pixels of symbol and identifier maps: category glyphs, drawn numerals, compositing and PNG bytes.

Why glyphs: the default ``tiny`` Stable Diffusion pipeline is random-init, so its image for "a chair"
is structured noise that carries no trace of the word. Downstream, the reference embedding of a symbol
map must still tell categories apart, so in tiny mode each SD image is blended with a deterministic
per-category glyph (hue, shape and initials). With a real checkpoint the SD image is the icon and
no glyph is added (``symbols.glyph: auto``).
"""

from __future__ import annotations

import colorsys
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_SHAPES = ("circle", "square", "triangle", "diamond", "hexagon", "cross")


def category_colour(cid: int) -> tuple[int, int, int]:
    """RGB colour of category ``cid``: 12 hues x 3 saturation/value tiers.

    With the shape (``cid % 6``) this gives every one of up to 216 categories its own
    (shape, tier, hue) triple, with hues of same-shape same-tier glyphs 30 degrees apart.
    """
    shape, tier, hue_idx = cid % len(_SHAPES), (cid // len(_SHAPES)) % 3, cid // (3 * len(_SHAPES))
    hue = (hue_idx / 12 + shape / 72) % 1.0
    sat, val = ((0.9, 0.85), (0.5, 0.95), (0.95, 0.5))[tier]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return round(r * 255), round(g * 255), round(b * 255)


def initials(name: str) -> str:
    """Two letters naming a category: ``"office chair"`` -> ``"OC"``, ``"chair"`` -> ``"CH"``."""
    words = [w for w in name.replace("/", " ").split() if w]
    if len(words) >= 2:
        return (words[0][0] + words[1][0]).upper()
    return name[:2].upper()


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    sides, phase = {"triangle": (3, -math.pi / 2), "diamond": (4, 0.0), "hexagon": (6, 0.0)}[kind]
    return [(cx + r * math.cos(phase + 2 * math.pi * k / sides), cy + r * math.sin(phase + 2 * math.pi * k / sides))
            for k in range(sides)]


def glyph(cid: int, name: str, size: int) -> Image.Image:
    """RGB ``size``x``size`` icon for category ``cid``: coloured shape (by ``cid % 6``) with the initials."""
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    colour = category_colour(cid)
    kind = _SHAPES[cid % len(_SHAPES)]
    c, r = size / 2, size * 0.44
    if kind == "circle":
        draw.ellipse((c - r, c - r, c + r, c + r), fill=colour)
    elif kind == "square":
        draw.rectangle((c - r * 0.85, c - r * 0.85, c + r * 0.85, c + r * 0.85), fill=colour)
    elif kind == "cross":
        w = r * 0.45
        draw.rectangle((c - w, c - r, c + w, c + r), fill=colour)
        draw.rectangle((c - r, c - w, c + r, c + w), fill=colour)
    else:
        draw.polygon(_polygon(kind, c, c + (r * 0.15 if kind == "triangle" else 0.0), r), fill=colour)
    ink = "black" if sum(colour) > 380 else "white"
    font = ImageFont.load_default(size=max(8, size // 3))
    draw.text((c, c + (size * 0.08 if kind == "triangle" else 0.0)), initials(name), fill=ink, font=font, anchor="mm")
    return img


def identifier_image(i: int, size: int) -> Image.Image:
    """Identifier map for ``<OBJ{i:03d}>``: the numeral ``i:03d`` in black on white, ``size``x``size`` RGB.

    Drawn at 4x and downsampled with Lanczos so small icons keep readable, anti-aliased digits.
    """
    big = size * 4
    img = Image.new("RGB", (big, big), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=int(big * 0.42))
    draw.text((big / 2, big / 2), f"{i:03d}", fill="black", font=font, anchor="mm")
    draw.rectangle((1, 1, big - 2, big - 2), outline="black", width=max(1, big // 32))
    return img.resize((size, size), Image.Resampling.LANCZOS)


def blend(sd_image: np.ndarray, glyph_image: Image.Image, glyph_weight: float) -> Image.Image:
    """``glyph_weight * glyph + (1 - glyph_weight) * sd`` at the SD resolution.

    ``sd_image``: (H, W, 3) float in [0, 1] (diffusers ``output_type="np"``).
    """
    g = np.asarray(glyph_image.resize(sd_image.shape[1::-1], Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
    mix = glyph_weight * g + (1.0 - glyph_weight) * sd_image.astype(np.float32)
    return Image.fromarray(np.clip(np.rint(mix * 255.0), 0, 255).astype(np.uint8), "RGB")


def to_image(sd_image: np.ndarray) -> Image.Image:
    """(H, W, 3) float [0, 1] -> RGB image."""
    return Image.fromarray(np.clip(np.rint(sd_image * 255.0), 0, 255).astype(np.uint8), "RGB")


def png_bytes(img: Image.Image, size: int) -> bytes:
    """``img`` resized to ``size``x``size`` (Lanczos) as PNG bytes (no metadata, so bytes are reproducible)."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()

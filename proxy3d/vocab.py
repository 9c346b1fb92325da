"""The 213-category vocabulary (see resources/CATEGORIES.md for its source)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

NUM_IDENTIFIERS = 100


@lru_cache(maxsize=1)
def categories() -> tuple[str, ...]:
    text = resources.files("proxy3d").joinpath("resources/categories.txt").read_text(encoding="utf-8")
    cats = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(cats) != 213:
        raise RuntimeError(f"proxy3d/resources/categories.txt has {len(cats)} categories, expected 213")
    return cats


@lru_cache(maxsize=1)
def _index() -> dict[str, int]:
    return {c: i for i, c in enumerate(categories())}


def category_id(label: str) -> int:
    """Category id of ``label`` (case-insensitive, underscores as spaces); -1 when unknown."""
    return _index().get(label.strip().lower().replace("_", " "), -1)


def identifier_token(i: int) -> str:
    """``<OBJ007>`` for identifier 7 (0 <= i < 100)."""
    if not 0 <= i < NUM_IDENTIFIERS:
        raise ValueError(f"identifier {i} out of range 0..{NUM_IDENTIFIERS - 1}")
    return f"<OBJ{i:03d}>"

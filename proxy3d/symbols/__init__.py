"""Symbol maps (one Stable Diffusion icon per category) and identifier maps (drawn numerals)."""

from proxy3d.symbols.build import SymbolRenderer, render_maps

__all__ = ["SymbolRenderer", "render_maps"]

"""Perception: 2D encoders, geometry (depth | vggt), masks (gt | sam2) and their fusion into patch triplets.

World frame everywhere: metres, z up, axis-aligned (DESIGN.md §4).
"""

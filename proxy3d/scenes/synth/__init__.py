"""Deterministic procedural world (rooms of boxes), a vectorised CPU ray caster, and the dataset builder."""

from proxy3d.scenes.synth.dataset import SynthConfig, generate_dataset
from proxy3d.scenes.synth.world import World, build_world

__all__ = ["SynthConfig", "World", "build_world", "generate_dataset"]

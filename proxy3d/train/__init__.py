"""Curriculum training of the Proxy3D VLM (stages 1-4) under DeepSpeed."""

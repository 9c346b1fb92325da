"""Scenes: ScanNet-layout reader/writer, .sens files, videos, and the synthetic world."""

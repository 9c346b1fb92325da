"""The synthetic generator against a golden manifest: the sha256 of every file of the first scene of the dataset
that params.yaml's ``synth`` section makes (what ``make data`` builds and data.dvc records). Generator drift shows
here in seconds instead of at the end of ``make demo``'s data check. A scene depends only on (seed, index) and its
settings, so a one-scene dataset gives the same bytes as scene0000_00 of the full one.

Regenerate the manifest after an intended generator change: ``.venv/bin/python tests/test_synth_golden.py``."""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "fixtures" / "synth_scene0000_00.sha256"
SCENE = "scene0000_00"


def scene_manifest(work: Path) -> dict[str, str]:
    """Relative path -> sha256 of the files of the first scene, generated into ``work``."""
    from proxy3d.config import load_params
    from proxy3d.scenes.synth import generate_dataset

    cfg = dataclasses.replace(load_params(ROOT / "params.yaml").synth, scenes=1)
    generate_dataset(work / "data", cfg, progress=False)
    scene = work / "data" / "scenes" / SCENE
    return {p.relative_to(scene).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(scene.rglob("*")) if p.is_file()}


def read_golden() -> dict[str, str]:
    """The manifest in ``sha256sum`` format (``cd data/scenes/scene0000_00 && sha256sum -c`` checks a dataset)."""
    return {name: digest for digest, name in (line.split("  ", 1) for line in GOLDEN.read_text().splitlines())}


def test_first_scene_of_the_default_dataset_matches_the_golden_manifest(tmp_path: Path) -> None:
    got, want = scene_manifest(tmp_path), read_golden()
    assert len(want) > 100 and any(name.startswith("color/") for name in want)
    changed = sorted(n for n in want.keys() | got.keys() if want.get(n) != got.get(n))
    assert not changed, (
        f"the generator's {SCENE} differs from {GOLDEN.relative_to(ROOT)} in {len(changed)} of {len(want)} files "
        f"(first: {', '.join(changed[:5])}). If the change is intended, regenerate the manifest with "
        f"`.venv/bin/python tests/test_synth_golden.py`, and regenerate data.dvc too: `rm -rf data && make data` "
        "(it rewrites data.dvc and reports the difference), then commit both.")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        manifest = scene_manifest(Path(tmp))
    GOLDEN.write_text("".join(f"{digest}  {name}\n" for name, digest in manifest.items()))
    print(f"wrote {GOLDEN} ({len(manifest)} files)", file=sys.stderr)

"""The vendored reference fixtures are complete and intact, and in sync with ../shared/px-reference when that
folder exists next to the repository (a fresh clone elsewhere checks them against SHA256SUMS only, and says so)."""
from __future__ import annotations

import hashlib
import warnings

from conftest import REFERENCE, SHARED_REFERENCE, reference_dir


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest() -> dict[str, str]:
    lines = (reference_dir() / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split("  ", 1) for line in lines if line.strip())}


def test_vendored_fixtures_match_their_manifest():
    manifest = _manifest()
    assert len(manifest) >= 15 and "meta.json" in manifest and "inputs.safetensors" in manifest
    on_disk = {p.name for p in REFERENCE.iterdir()} - {"README.md", "SHA256SUMS"}
    assert on_disk == set(manifest), "fixture files and SHA256SUMS disagree"
    bad = [name for name, digest in manifest.items() if _sha256(REFERENCE / name) != digest]
    assert not bad, f"altered fixtures: {bad}"
    assert "official" in (REFERENCE / "README.md").read_text()


def test_vendored_fixtures_are_in_sync_with_shared_copy():
    if not (SHARED_REFERENCE / "meta.json").is_file():  # not a skip: the manifest test above still ran
        warnings.warn(f"{SHARED_REFERENCE} not found: the vendored fixtures were checked against SHA256SUMS only",
                      stacklevel=1)
        return
    shared = {p.name: _sha256(p) for p in SHARED_REFERENCE.iterdir() if p.is_file() and p.name != "README.md"}
    mine = _manifest()
    assert set(shared) == set(mine), f"only shared: {set(shared) - set(mine)}, only vendored: " \
                                     f"{set(mine) - set(shared)}"
    stale = sorted(n for n in shared if shared[n] != mine[n])
    assert not stale, f"vendored fixtures differ from {SHARED_REFERENCE}: {stale}; copy them again and update " \
                      "SHA256SUMS"

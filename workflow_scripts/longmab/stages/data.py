"""Stage `data`: validate the raw training file and split it into contiguous shards."""

from __future__ import annotations

from pathlib import Path

from ..io import write_json, write_jsonl
from ..validate import load_samples


def shard_bounds(n_items: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) bounds; sizes differ by at most one, earlier shards larger."""
    base, extra = divmod(n_items, n_shards)
    bounds, start = [], 0
    for i in range(n_shards):
        end = start + base + (1 if i < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


def prepare_shards(train_path: str | Path, shard_paths: list[str], manifest_path: str, max_samples: int = 0) -> dict:
    """Validate ``train_path`` (raises ``DataError`` before anything is written) and write shards."""
    samples = load_samples(train_path)
    n_raw = len(samples)
    if max_samples:
        samples = samples[:max_samples]
    manifest = {"train": str(train_path), "samples_in_file": n_raw, "samples_used": len(samples), "shards": {}}
    for path, (start, end) in zip(shard_paths, shard_bounds(len(samples), len(shard_paths))):
        write_jsonl(path, samples[start:end])
        manifest["shards"][Path(path).stem] = {"first": start, "count": end - start}
    write_json(manifest_path, manifest)
    return manifest

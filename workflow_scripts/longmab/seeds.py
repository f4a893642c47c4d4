"""Stable seed derivation: the same parts give the same seed in every process and on every machine."""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(base: int, *parts: object) -> int:
    """Derive a 31-bit seed from a base seed and any printable parts (stage name, sample id, round).

    Python's ``hash`` is salted per process, so we hash the parts' ``repr`` with SHA-256 instead.
    """
    text = "\x1f".join([str(int(base))] + [repr(p) for p in parts])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big") & 0x7FFFFFFF


def rng_for(base: int, *parts: object) -> np.random.Generator:
    """A numpy Generator seeded by :func:`derive_seed`."""
    return np.random.default_rng(derive_seed(base, *parts))

"""Ground-truth evidence vs the chunks the rollout chose.

A raw sample may carry ``evidence``: the numbers of its ``Passage i:`` blocks that support the
answer (the synthetic data and :mod:`longmab.convert` write it; the method never reads it). Probe
rows map each chunk to the passages it overlaps (``chunk_passages``), so every rollout round can be
checked: did the selected chunks cover the evidence?
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from math import comb
from statistics import mean


def evidence_chunks(row: Mapping) -> list[bool]:
    """Per chunk: does it overlap an evidence passage? (``chunk_passages`` vs ``evidence``; all
    False when the row has no evidence annotation)."""
    evidence = {int(e) for e in row.get("evidence") or []}
    return [bool(evidence.intersection(int(p) for p in ps)) for ps in row.get("chunk_passages") or []]


def round_covers(row: Mapping, selected: Iterable[int]) -> tuple[bool, bool]:
    """(every evidence passage covered, at least one covered) by the chunks ``selected``."""
    evidence = {int(e) for e in row.get("evidence") or []}
    passages = row.get("chunk_passages") or []
    covered = {int(p) for i in selected for p in passages[int(i)]}
    return evidence <= covered, bool(evidence & covered)


def chance_cover_all(row: Mapping, k: int) -> float | None:
    """Probability that ``k`` chunks drawn uniformly at random (the ``random`` strategy) cover every
    evidence passage of ``row``: exact, by counting the k-subsets of chunks (``None`` without an
    annotation or with no chunks)."""
    evidence = {int(e) for e in row.get("evidence") or []}
    passages = [{int(p) for p in ps} for ps in row.get("chunk_passages") or []]
    n = len(passages)
    if not evidence or not n:
        return None
    k = min(int(k), n)
    # inclusion-exclusion over the evidence passages: P(all covered) = sum_S (-1)^|S| P(none of S)
    total = 0.0
    ev = sorted(evidence)
    for mask in range(1 << len(ev)):
        missed = {ev[i] for i in range(len(ev)) if mask >> i & 1}
        free = sum(1 for ps in passages if not ps & missed)  # chunks that avoid every passage of S
        total += (-1) ** len(missed) * (comb(free, k) / comb(n, k))
    return max(0.0, min(1.0, total))


def _bootstrap(values: list[float], resamples: int = 1000, confidence: float = 0.95,
               seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile interval of the mean over ``values`` (one value per sample)."""
    if len(values) < 2:
        return None, None
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    lo = means[int((1 - confidence) / 2 * resamples)]
    hi = means[min(resamples - 1, int((1 + confidence) / 2 * resamples))]
    return float(lo), float(hi)


def evidence_hit_rates(rollout_rows: Iterable[Mapping], top_k: int | None = None) -> dict:
    """Share of rollout rounds whose selected chunks cover all (``all``) / any (``any``) evidence
    passages, over the rows that have an evidence annotation; ``None`` rates when none has one.

    Also ``round1_all``: the same for round 1 only (the initial values' choice under UCB);
    ``all_ci``: a 95 % bootstrap interval of ``all`` over samples (each sample's share of rounds);
    ``chance_all``: the same share expected of ``top_k`` random chunks per round (exact per sample,
    :func:`chance_cover_all`; ``top_k`` defaults to the size of the first round's selection);
    ``per_round``: ``[{"round", "all", "any", "n"}]``; ``chunks``: mean chunks per sample.
    """
    hits_all, hits_any, first, per_sample, chance, chunks = [], [], [], [], [], []
    by_round: dict[int, list[tuple[bool, bool]]] = {}
    for row in rollout_rows:
        if not row.get("evidence"):
            continue
        rounds = row.get("rounds", [])
        sample_all = []
        for rnd in rounds:
            a, b = round_covers(row, rnd["selected"])
            hits_all.append(a)
            hits_any.append(b)
            sample_all.append(a)
            by_round.setdefault(int(rnd["round"]), []).append((a, b))
            if rnd["round"] == 1:
                first.append(a)
        if not rounds:
            continue
        per_sample.append(float(mean(sample_all)))
        chunks.append(len(row.get("chunk_passages") or []))
        k = top_k if top_k is not None else len(rounds[0]["selected"])
        c = chance_cover_all(row, k)
        if c is not None:
            chance.append(c)
    lo, hi = _bootstrap(per_sample)
    return {
        "all": float(mean(hits_all)) if hits_all else None,
        "any": float(mean(hits_any)) if hits_any else None,
        "round1_all": float(mean(first)) if first else None,
        "rounds": len(hits_all),
        "all_ci": [lo, hi] if lo is not None else None,
        "chance_all": float(mean(chance)) if chance else None,
        "chunks": float(mean(chunks)) if chunks else None,
        "per_round": [{"round": r, "all": float(mean(a for a, _ in v)), "any": float(mean(b for _, b in v)),
                       "n": len(v)} for r, v in sorted(by_round.items())],
    }

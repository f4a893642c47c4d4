"""Ground-truth evidence vs the chunks the rollout chose.

A raw sample may carry ``evidence``: the numbers of its ``Passage i:`` blocks that support the
answer (the synthetic data and :mod:`longmab.convert` write it; the method never reads it). Probe
rows map each chunk to the passages it overlaps (``chunk_passages``), so every rollout round can be
checked: did the selected chunks cover the evidence?
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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


def evidence_hit_rates(rollout_rows: Iterable[Mapping]) -> dict:
    """Share of rollout rounds whose selected chunks cover all (``all``) / any (``any``) evidence
    passages, over the rows that have an evidence annotation; ``None`` rates when none has one.

    Also ``round1_all``: the same for round 1 only (the initial values' choice under UCB).
    """
    hits_all, hits_any, first = [], [], []
    for row in rollout_rows:
        if not row.get("evidence"):
            continue
        for rnd in row.get("rounds", []):
            a, b = round_covers(row, rnd["selected"])
            hits_all.append(a)
            hits_any.append(b)
            if rnd["round"] == 1:
                first.append(a)
    return {
        "all": float(mean(hits_all)) if hits_all else None,
        "any": float(mean(hits_any)) if hits_any else None,
        "round1_all": float(mean(first)) if first else None,
        "rounds": len(hits_all),
    }

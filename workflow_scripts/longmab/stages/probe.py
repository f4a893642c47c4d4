"""Stage `probe` (method §1-2): chunk every context, generate the probe chain of thought given the
gold answer, keep only samples whose probe's final answer matches. Nothing is dropped silently: every
dropped id is listed in the stats with its reason."""

from __future__ import annotations

from typing import Mapping

from ..chunking import chunk_passages, chunk_spans
from ..engine import Engine, SamplingConfig
from ..logs import get_logger
from ..metrics import extract_probe_answer, probe_matches
from ..prompts import render_probe
from ..seeds import derive_seed

log = get_logger("probe")


def probe_sampling(sampling: Mapping) -> SamplingConfig:
    """The probe's sampling: the shared ``sampling`` config with ``probe_temperature`` if it is set."""
    values = dict(sampling)
    if values.get("probe_temperature") is not None:
        values["temperature"] = values["probe_temperature"]
    return SamplingConfig.from_dict(values)


def drop_reason(probe: str, gold: str) -> str | None:
    """None when the probe is kept, else a short human-readable reason."""
    if not probe or not probe.strip():
        return "empty generation"
    pred = extract_probe_answer(probe)
    if pred is None:
        return "no 'The answer is' marker"
    if not probe_matches(probe, gold):
        return f"final answer {pred[:80]!r} does not match gold {gold[:80]!r}"
    return None


def run_probe(
    samples: list[dict],
    engine: Engine,
    templates: Mapping[str, str],
    sampling: SamplingConfig,
    chunking: Mapping[str, int],
    seed: int,
    keep_unmatched: bool = False,
) -> tuple[list[dict], dict]:
    """Return (kept probe rows, stats). One engine call for all samples.

    Probe rows follow the contract in docs/design.md: the raw sample plus ``probe``, ``chunks``
    (exact substrings of the context, document order) and ``chunk_passages`` (which ``Passage i:``
    each chunk overlaps; empty lists for contexts without such headers).

    ``keep_unmatched=True`` (benchmarks of arm selection only; the pipeline never sets it) also
    returns the rows whose probe would be dropped, each with ``probe_drop_reason``; the stats still
    count them as dropped.
    """
    conversations = [render_probe(templates, s["context"], s["input"], s["answer"]) for s in samples]
    seeds = [derive_seed(seed, "probe", s["id"]) for s in samples]
    log.info("probe: generating %d chains of thought", len(samples))
    outputs = engine.generate(conversations, sampling, seeds) if samples else []
    kept, dropped = [], []
    for sample, probe in zip(samples, outputs):
        reason = drop_reason(probe, sample["answer"])
        if reason is not None:
            dropped.append({"id": sample["id"], "reason": reason})
            if not keep_unmatched:
                continue
        spans = chunk_spans(
            sample["context"],
            engine.count_tokens,
            chunking["chunk_size"],
            chunking.get("overlap_fragments", 2),
            chunking.get("min_fragments", 2),
        )
        row = dict(sample)
        row["probe"] = probe
        row["chunks"] = [sample["context"][s:e] for s, e in spans]
        row["chunk_passages"] = chunk_passages(sample["context"], spans)
        if reason is not None:
            row["probe_drop_reason"] = reason
        kept.append(row)
    stats = {
        "samples": len(samples),
        "kept": len(samples) - len(dropped),
        "dropped": len(dropped),
        "dropped_ids": dropped,
        "mean_chunks": (sum(len(r["chunks"]) for r in kept) / len(kept)) if kept else 0.0,  # rows returned
    }
    log.info("probe: kept %d / %d (%d dropped)", stats["kept"], len(samples), len(dropped))
    return kept, stats

"""Stage `probe` (method §1-2): chunk every context, generate the probe chain of thought given the
gold answer, keep only samples whose probe's final answer matches. Nothing is dropped silently: every
dropped id is listed in the stats with its reason.

A sample whose probe prompt (chat template included) plus ``max_tokens`` does not fit the engine's
context window is dropped before generation, with the reason, instead of failing the whole shard
(issue #13.6: one 5 MB context stopped a shard with "prompt 0 has 1393658 tokens"). The method reads
the full document in the probe, so the prompt is not truncated.
"""

from __future__ import annotations

from typing import Mapping

from ..chunking import chunk_passages, chunk_spans
from ..engines import Conversation, Engine, SamplingConfig
from ..logs import get_logger
from ..metrics import SUBEM_MODES, extract_probe_answer, probe_matches
from ..prompts import render_probe
from ..seeds import derive_seed

log = get_logger("probe")


def probe_sampling(sampling: Mapping) -> SamplingConfig:
    """The probe's sampling: the shared ``sampling`` config with ``probe_temperature`` if it is set."""
    values = dict(sampling)
    if values.get("probe_temperature") is not None:
        values["temperature"] = values["probe_temperature"]
    return SamplingConfig.from_dict(values)


def drop_reason(probe: str, gold: str, subem: str = "char", template: str | None = None) -> str | None:
    """None when the probe is kept, else a short human-readable reason.

    Parameters
    ----------
    probe, gold : str
        The generated chain of thought and the sample's gold answer.
    subem : {"char", "token"}
        Containment test of the keep decision (config ``reward.subem``; paper: ``"char"``).
    template : str, optional
        The probe template; markers that echo its own instructions are not answers
        (:func:`longmab.metrics.extract_probe_answer`).
    """
    if not probe or not probe.strip():
        return "empty generation"
    pred = extract_probe_answer(probe, template)
    if pred is None:
        if template is not None and extract_probe_answer(probe) is not None:
            return "no 'The answer is' marker (only echoes of the prompt's own instruction)"
        return "no 'The answer is' marker"
    if not probe_matches(probe, gold, mode=subem, template=template):
        return f"final answer {pred[:80]!r} does not match gold {gold[:80]!r}"
    return None


def prompt_tokens(engine: Engine, conversation: Conversation) -> int:
    """Tokens of ``conversation`` as the engine will see it: chat template applied, generation prompt
    added, no special tokens added by the tokenizer (what ``llm.chat`` and
    :meth:`~longmab.engines.HFEngine.encode_conversation` do)."""
    encode = getattr(engine, "encode_conversation", None)
    if encode is not None:
        return len(encode(conversation))
    tokenizer = getattr(engine, "tokenizer", None)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=True)
    else:  # an engine without a chat tokenizer (a test double): the messages' text
        text = "\n".join(m["content"] for m in conversation)
    return int(engine.count_tokens(text))


def run_probe(
    samples: list[dict],
    engine: Engine,
    templates: Mapping[str, str],
    sampling: SamplingConfig,
    chunking: Mapping[str, int],
    seed: int,
    keep_unmatched: bool = False,
    subem: str = "char",
    max_model_len: int | None = None,
) -> tuple[list[dict], dict]:
    """Return (kept probe rows, stats). One engine call for all samples that fit the window.

    Probe rows follow the contract in docs/design.md: the raw sample plus ``probe``, ``chunks``
    (exact substrings of the context, document order) and ``chunk_passages`` (which ``Passage i:``
    each chunk overlaps; empty lists for contexts without such headers).

    Parameters
    ----------
    samples : list of dict
        The shard's raw samples, in shard order (sample ``i`` is line ``i + 1`` of the shard file).
    engine : Engine
        Generates the probes; its ``count_tokens`` measures the chunks.
    templates : mapping
        Prompt templates (uses ``"probe"``).
    sampling : SamplingConfig
        The probe's sampling (:func:`probe_sampling`).
    chunking : mapping
        ``chunk_size`` and optionally ``overlap_fragments`` / ``min_fragments``.
    seed : int
        Base seed; each sample's seed is derived from it and the sample id.
    keep_unmatched : bool, default False
        Benchmarks of arm selection only (the pipeline never sets it): also return the rows whose
        probe would be dropped, each with ``probe_drop_reason``; the stats still count them as dropped.
    subem : {"char", "token"}, default "char"
        Containment test of the keep decision (config ``reward.subem``; paper: ``"char"``).
    max_model_len : int, optional
        The engine's context window in tokens; default: the engine's ``max_model_len`` attribute (the
        transformers engine has one). A sample whose probe prompt plus ``sampling.max_tokens`` exceeds
        it is dropped before generation (reason in the stats, id and shard line in the log). None and
        no attribute: no check.

    Returns
    -------
    (list of dict, dict)
        The rows, and the stats: ``samples``, ``kept``, ``dropped`` (all drops), ``too_long`` (drops
        before generation), ``dropped_ids`` (``{"id", "reason"}`` per drop, shard order) and
        ``mean_chunks`` (over the rows returned).
    """
    if subem not in SUBEM_MODES:
        raise ValueError(f"subem must be one of {SUBEM_MODES}, got {subem!r}")
    template = templates["probe"]
    window = max_model_len if max_model_len is not None else getattr(engine, "max_model_len", None)
    conversations = [render_probe(templates, s["context"], s["input"], s["answer"]) for s in samples]
    reasons: list[str | None] = [None] * len(samples)
    if window is not None:
        for i, (sample, conv) in enumerate(zip(samples, conversations)):
            n = prompt_tokens(engine, conv)
            if n + sampling.max_tokens > int(window):
                reasons[i] = (f"prompt too long: {n} prompt tokens + max_tokens {sampling.max_tokens} > "
                              f"max_model_len {int(window)}")
                log.warning("probe: dropping sample id=%s (shard line %d): %s", sample["id"], i + 1, reasons[i])
    todo = [i for i in range(len(samples)) if reasons[i] is None]
    seeds = [derive_seed(seed, "probe", samples[i]["id"]) for i in todo]
    log.info("probe: generating %d chains of thought (%d samples too long for the window)",
             len(todo), len(samples) - len(todo))
    try:
        generated = engine.generate([conversations[i] for i in todo], sampling, seeds) if todo else []
    except ValueError as exc:
        k = getattr(exc, "request_index", None)
        if k is None or not 0 <= k < len(todo):
            raise
        i = todo[k]
        raise ValueError(f"probe: sample id={samples[i]['id']!r} (shard line {i + 1}): {exc}") from exc
    outputs: list[str | None] = [None] * len(samples)
    for i, text in zip(todo, generated):
        outputs[i] = text
    kept, dropped = [], []
    for i, sample in enumerate(samples):
        probe = outputs[i]
        reason = reasons[i] or drop_reason(probe, sample["answer"], subem=subem, template=template)
        if reason is not None:
            dropped.append({"id": sample["id"], "reason": reason})
            if not keep_unmatched or probe is None:
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
        "too_long": sum(r is not None for r in reasons),
        "dropped_ids": dropped,
        "mean_chunks": (sum(len(r["chunks"]) for r in kept) / len(kept)) if kept else 0.0,  # rows returned
    }
    log.info("probe: kept %d / %d (%d dropped, %d of them too long)", stats["kept"], len(samples),
             len(dropped), stats["too_long"])
    return kept, stats

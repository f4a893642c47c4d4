"""Stages of the SeaLong baseline (method.md §10): sample, score by MBR, build pairs.

1. :func:`sample_sealong` — N outputs per question over the full context (middle-truncated to the
   engine window the way evaluation truncates), SeaLong's instruction appended to the question, one
   engine call for the whole shard, one seed per (sample, output).
2. :func:`score_sealong` — every output embedded with the configured embedder; ``mbr`` per output.
3. :func:`build_sealong_pairs` — chosen = highest MBR, rejected = seeded pick from the lower half;
   the pair prompt is the sampling prompt over the full context, middle-truncated like LongMab-PO's
   pairs (method.md §6), so both methods reach DPO in the same format.

Rows keep the raw sample's fields; the gold answer is read only for the logged SubEM / rewards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from statistics import mean

import numpy as np

from ..engines import Engine, SamplingConfig
from ..logs import get_logger
from ..metrics import extract_answer, strict_reward, sub_exact_match
from ..pairs import build_pair_prompt
from ..prompts import render_answer
from ..sealong import mbr_scores, sealong_question, sealong_templates, select_sealong_pair
from ..seeds import derive_seed, rng_for
from .evaluate import chat_overhead, fit_context

log = get_logger("sealong")


def sample_sealong(
    samples: Sequence[dict],
    engine: Engine,
    templates: Mapping[str, str],
    sampling: SamplingConfig,
    n: int,
    instruction: str,
    seed: int,
    max_model_len: int | None = None,
    prompt_mode: str = "ours",
) -> tuple[list[dict], dict]:
    """Sample ``n`` outputs per sample in one engine call (``prompt_mode``: our answer template
    around SeaLong's question, or SEALONG's own prompt, :func:`longmab.sealong.sealong_templates`).

    Returns
    -------
    (list of dict, dict)
        Rows: the sample plus ``responses`` (``n`` strings, output ``j`` seeded by
        ``derive_seed(seed, "sealong", id, j)``), ``prompt_tokens`` and ``truncated`` (the context was
        middle-truncated to fit ``max_model_len - max_tokens - chat template``). Stats:
        ``samples``, ``generations``, ``truncated``, ``seconds_engine``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    templates = sealong_templates(templates, prompt_mode)
    tok = engine.tokenizer
    budget = None
    if max_model_len:
        budget = int(max_model_len) - int(sampling.max_tokens) - chat_overhead(engine)
        if budget <= 0:
            raise ValueError(f"no room for a prompt: max_model_len {max_model_len} - max_tokens {sampling.max_tokens}")
    prompts = []
    for s in samples:
        question = sealong_question(s["input"], instruction)
        if budget is None:
            prompt = render_answer(templates, s["context"], question)[0]["content"]
            prompts.append((prompt, engine.count_tokens(prompt), False))
        else:
            prompts.append(fit_context(templates, s["context"], question,
                                       lambda t: tok.encode(t, add_special_tokens=False),
                                       lambda ids: tok.decode(ids), budget))
    conversations = [[{"role": "user", "content": p[0]}] for p in prompts for _ in range(n)]
    seeds = [derive_seed(seed, "sealong", s["id"], j) for s in samples for j in range(n)]
    log.info("sealong: %d samples x %d outputs (%d contexts truncated)", len(samples), n,
             sum(p[2] for p in prompts))
    t0 = time.perf_counter()
    outputs = engine.generate(conversations, sampling, seeds) if conversations else []
    seconds = time.perf_counter() - t0
    rows = []
    for i, (s, p) in enumerate(zip(samples, prompts)):
        row = dict(s)
        row["responses"] = outputs[i * n : (i + 1) * n]
        row["prompt_tokens"] = p[1]
        row["truncated"] = p[2]
        rows.append(row)
    stats = {"samples": len(rows), "n": n, "generations": len(outputs), "truncated": sum(p[2] for p in prompts),
             "seconds_engine": seconds}
    return rows, stats


def score_sealong(rows: Sequence[dict], encode: Callable[[Sequence[str]], np.ndarray]) -> list[dict]:
    """Add ``mbr`` (one score per response, :func:`longmab.sealong.mbr_scores`) to each row.

    All responses of the shard are embedded in one ``encode`` call.
    """
    texts = [r for row in rows for r in row["responses"]]
    emb = np.asarray(encode(texts), dtype=np.float64) if texts else np.zeros((0, 1))
    out, pos = [], 0
    for row in rows:
        k = len(row["responses"])
        new = dict(row)
        new["mbr"] = [float(x) for x in mbr_scores(emb[pos : pos + k])] if k else []
        pos += k
        out.append(new)
    return out


def build_sealong_pairs(
    rows: Sequence[dict],
    templates: Mapping[str, str],
    encode: Callable[[str], list],
    decode: Callable[[list], str],
    max_prompt_length: int,
    reserve_tokens: int,
    instruction: str,
    seed: int,
    subem: str = "char",
    prompt_mode: str = "ours",
) -> tuple[list[dict], dict]:
    """Return (pair rows, stats) from MBR-scored rows. The pair prompt is the sampling prompt of
    ``prompt_mode``; the logged SubEM reads the extracted answer (``ours``) or, as SEALONG's
    evaluation does, the whole output (``sealong``).

    Pair rows have the LongMab-PO pair contract (``id, input, answer, prompt, chosen, rejected,
    chosen_reward, rejected_reward, indices``; the rewards are the strict rewards of method.md §6,
    for comparison only) plus ``chosen_mbr``, ``rejected_mbr``, ``chosen_subem``, ``rejected_subem``.
    """
    templates = sealong_templates(templates, prompt_mode)

    def logged_subem(output: str, gold) -> float:
        return sub_exact_match(output if prompt_mode == "sealong" else extract_answer(output), gold, subem)

    pairs, ties, distinct = [], [], []
    for row in rows:
        responses, scores = row["responses"], row["mbr"]
        distinct.append(len(set(responses)))
        choice = select_sealong_pair(scores, rng_for(seed, "sealong-pairs", row["id"]))
        if choice is None or responses[choice[0]] == responses[choice[1]]:
            ties.append(row["id"])
            continue
        ci, ri = choice
        question = sealong_question(row["input"], instruction)
        prompt = build_pair_prompt(templates, row["context"], question, responses[ci], responses[ri],
                                   encode, decode, max_prompt_length, reserve_tokens)
        pairs.append({
            "id": row["id"], "input": row["input"], "answer": row["answer"], "prompt": prompt,
            "chosen": responses[ci], "rejected": responses[ri],
            "chosen_reward": strict_reward(responses[ci], row["answer"], subem),
            "rejected_reward": strict_reward(responses[ri], row["answer"], subem),
            "indices": [ci, ri], "chosen_mbr": scores[ci], "rejected_mbr": scores[ri],
            "chosen_subem": logged_subem(responses[ci], row["answer"]),
            "rejected_subem": logged_subem(responses[ri], row["answer"]),
        })
    all_rewards = [strict_reward(r, row["answer"], subem) for row in rows for r in row["responses"]]
    stats = {
        "method": "sealong",
        "prompt_mode": prompt_mode,
        "rollout_samples": len(rows),
        "pairs": len(pairs),
        "ties_skipped": len(ties),
        "ties_skipped_ids": ties,
        "no_rounds_ids": [],
        "mean_chosen_reward": mean(p["chosen_reward"] for p in pairs) if pairs else 0.0,
        "mean_rejected_reward": mean(p["rejected_reward"] for p in pairs) if pairs else 0.0,
        "mean_chosen_subem": mean(p["chosen_subem"] for p in pairs) if pairs else 0.0,
        "mean_rejected_subem": mean(p["rejected_subem"] for p in pairs) if pairs else 0.0,
        "mean_distinct_responses": mean(distinct) if distinct else 0.0,
        "mean_rollout_reward": mean(all_rewards) if all_rewards else 0.0,
        "generations": sum(len(row["responses"]) for row in rows),
        "evidence_hit_rate": {"all": None, "any": None, "round1_all": None, "rounds": 0},
        "reward_variant": f"strict (SubEM {subem} + F1 on the extracted answer) / 2, logged only: "
                          "SeaLong picks by MBR, not by the gold answer",
    }
    log.info("sealong pairs: %d pairs from %d samples (%d ties)", len(pairs), len(rows), len(ties))
    return pairs, stats

"""Stage `pairs` (method §6): best vs worst rollout response per sample -> a LLaMA-Factory
preference dataset (pairs.jsonl + dataset_info.json) and stats.json."""

from __future__ import annotations

from statistics import mean
from typing import Callable, Mapping

from ..evidence import evidence_hit_rates
from ..logs import get_logger
from ..metrics import strict_reward
from ..pairs import build_pair_prompt, select_pair
from ..seeds import rng_for

log = get_logger("pairs")


def build_pairs(
    rollout_rows: list[dict],
    templates: Mapping[str, str],
    encode: Callable[[str], list],
    decode: Callable[[list], str],
    max_prompt_length: int,
    reserve_tokens: int,
    seed: int,
    subem: str = "char",
) -> tuple[list[dict], dict]:
    """Return (pair rows, partial stats). Responses are re-scored with the strict reward."""
    pairs, ties, no_rounds, distinct = [], [], [], []
    rewards = [float(r["reward"]) for row in rollout_rows for r in row.get("rounds", [])]
    for row in rollout_rows:
        responses = [r["response"] for r in row.get("rounds", [])]
        if not responses:
            no_rounds.append(row["id"])
            continue
        distinct.append(len(set(responses)))
        scores = [strict_reward(resp, row["answer"], subem) for resp in responses]
        choice = select_pair(scores, rng_for(seed, "pairs", row["id"]))
        if choice is None:
            ties.append(row["id"])
            continue
        ci, ri = choice
        prompt = build_pair_prompt(templates, row["context"], row["input"], responses[ci], responses[ri],
                                   encode, decode, max_prompt_length, reserve_tokens)
        pairs.append({
            "id": row["id"], "input": row["input"], "answer": row["answer"], "prompt": prompt,
            "chosen": responses[ci], "rejected": responses[ri],
            "chosen_reward": scores[ci], "rejected_reward": scores[ri],
            "indices": [ci, ri],
            "chosen_selected": row["rounds"][ci]["selected"], "rejected_selected": row["rounds"][ri]["selected"],
        })
    stats = {
        "rollout_samples": len(rollout_rows),
        "pairs": len(pairs),
        "ties_skipped": len(ties),
        "ties_skipped_ids": ties,
        "no_rounds_ids": no_rounds,
        "mean_chosen_reward": mean(p["chosen_reward"] for p in pairs) if pairs else 0.0,
        "mean_rejected_reward": mean(p["rejected_reward"] for p in pairs) if pairs else 0.0,
        "mean_distinct_responses": mean(distinct) if distinct else 0.0,
        "mean_rollout_reward": mean(rewards) if rewards else 0.0,
        "evidence_hit_rate": evidence_hit_rates(rollout_rows),
        "reward_variant": f"strict (SubEM {subem} + F1 on the extracted answer) / 2",
    }
    log.info("pairs: %d pairs from %d samples (%d ties skipped)", len(pairs), len(rollout_rows), len(ties))
    return pairs, stats


def dataset_info(dataset_name: str, file_name: str = "pairs.jsonl", system: bool = False) -> dict:
    """The LLaMA-Factory ``dataset_info.json`` entry for a ranking (preference) dataset (with a
    per-pair ``system`` column when ``system``: an imported file may carry one)."""
    columns = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}
    if system:
        columns["system"] = "system"
    return {
        dataset_name: {
            "file_name": file_name,
            "formatting": "alpaca",
            "ranking": True,
            "columns": columns,
        }
    }

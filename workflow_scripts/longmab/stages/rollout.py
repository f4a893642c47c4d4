"""Stage `rollout` (method §4): a UCB bandit over each sample's chunks for R rounds.

Each round, the prompts of *all* samples of the shard go to the engine in one generate call. Every
round of every sample is recorded. After each round the complete state is checkpointed to a resume
file, so an interrupted job continues from the last finished round with identical results.

``strategy`` selects the chunks of each round (the method and two ablations, same generation budget):

- ``ucb`` (the method): the ``top_k`` arms with the largest upper confidence bound.
- ``random``: ``top_k`` chunks drawn uniformly without replacement each round (seeded per sample
  and round), ignoring the arm values.
- ``full``: the whole original context every round (SeaLong-style sampling); ``selected`` lists
  every chunk.

The bandit's values are updated with the reward in all three, so the records have the same shape.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from ..bandit import UCBBandit
from ..engine import Engine, SamplingConfig
from ..io import read_json, write_json
from ..logs import get_logger
from ..metrics import rollout_reward
from ..prompts import join_chunks, render_answer
from ..seeds import derive_seed

log = get_logger("rollout")

STRATEGIES = ("ucb", "random", "full")


def fingerprint(rows: list[dict], settings: Mapping) -> str:
    """Hash of the inputs and settings a resume file must match."""
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for r in rows:
        h.update(json.dumps([r["id"], r["init_values"], r["chunks"]], ensure_ascii=False).encode())
    return h.hexdigest()


def _bandit_state(b: UCBBandit) -> dict:
    return {"values": b.values.tolist(), "counts": b.counts.tolist(), "t": b.t, "rng": b.rng.bit_generator.state}


def _restore(b: UCBBandit, state: dict) -> None:
    b.values = np.array(state["values"], dtype=np.float64)
    b.counts = np.array(state["counts"], dtype=np.int64)
    b.t = int(state["t"])
    b.rng.bit_generator.state = state["rng"]


def run_rollout(
    rows: list[dict],
    engine: Engine,
    templates: Mapping[str, str],
    sampling: SamplingConfig,
    rounds: int,
    top_k: int,
    seed: int,
    subem: str = "char",
    resume_path: str | Path | None = None,
    strategy: str = "ucb",
) -> tuple[list[dict], dict]:
    """Return (rollout rows, stats).

    Rollout row = embed row + ``rounds``: a list of ``{round, selected, reward, values, response}``
    (``selected`` in document order, ``values`` after the update). Stats: wall time in total and
    inside the engine's generate calls, the share outside it, generations and prompt tokens sent.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown rollout strategy {strategy!r}; expected one of {STRATEGIES}")
    settings = {"rounds": rounds, "top_k": top_k, "seed": seed, "subem": subem, "sampling": vars(sampling),
                "templates": dict(templates), "strategy": strategy}
    fp = fingerprint(rows, settings)
    bandits = [UCBBandit(r["init_values"], np.random.default_rng(derive_seed(seed, "ucb", r["id"]))) for r in rows]
    history: list[list[dict]] = [[] for _ in rows]
    start_round = 1
    if resume_path and Path(resume_path).exists():
        state = read_json(resume_path)
        if state.get("fingerprint") == fp:
            for b, s in zip(bandits, state["bandits"]):
                _restore(b, s)
            history = state["history"]
            start_round = state["done"] + 1
            log.info("rollout: resuming after round %d from %s", state["done"], resume_path)
        else:
            log.info("rollout: ignoring stale resume file %s", resume_path)

    t_engine = 0.0
    generations = 0
    t0 = time.perf_counter()
    active = [i for i, r in enumerate(rows) if r["chunks"]]
    for rnd in range(start_round, rounds + 1):
        selected = {i: _select(strategy, bandits[i], top_k, seed, rows[i]["id"], rnd) for i in active}
        conversations = [render_answer(templates, _context(strategy, rows[i], selected[i]), rows[i]["input"])
                         for i in active]
        seeds = [derive_seed(seed, "rollout", rows[i]["id"], rnd) for i in active]
        te = time.perf_counter()
        responses = engine.generate(conversations, sampling, seeds) if active else []
        t_engine += time.perf_counter() - te
        generations += len(responses)
        rewards = []
        for i, response in zip(active, responses):
            reward = rollout_reward(response, rows[i]["answer"], subem)
            bandits[i].update(selected[i], reward)
            rewards.append(reward)
            history[i].append({"round": rnd, "selected": selected[i], "reward": reward,
                               "values": bandits[i].values.tolist(), "response": response})
        if resume_path:
            write_json(resume_path, {"fingerprint": fp, "done": rnd, "history": history,
                                     "bandits": [_bandit_state(b) for b in bandits]})
        log.info("rollout: round %d/%d  samples %d  mean reward %.3f", rnd, rounds, len(active),
                 float(np.mean(rewards)) if rewards else 0.0)
    total = time.perf_counter() - t0
    out = []
    for row, hist in zip(rows, history):
        new = dict(row)
        new["rounds"] = hist
        out.append(new)
    stats = {"strategy": strategy, "generations": generations, "seconds_total": total, "seconds_engine": t_engine,
             "overhead_share": (total - t_engine) / total if total > 0 else 0.0}
    return out, stats


def _select(strategy: str, bandit: UCBBandit, top_k: int, seed: int, sample_id: str, rnd: int) -> list[int]:
    """The round's chunk indices in document order (only ``ucb`` consults the bandit)."""
    if strategy == "ucb":
        return bandit.select(top_k)
    n = bandit.n_arms
    if strategy == "full":
        return list(range(n))
    rng = np.random.default_rng(derive_seed(seed, "random-k", sample_id, rnd))
    return sorted(int(i) for i in rng.choice(n, size=min(top_k, n), replace=False))


def _context(strategy: str, row: Mapping, selected: list[int]) -> str:
    """The context the LLM sees: the original text for ``full``, else the selected chunks joined."""
    return row["context"] if strategy == "full" else join_chunks(row["chunks"], selected)

"""Compare rollout strategies at the same generation budget; prints one markdown table.

One process, one engine load, one run: the samples are probed once (method §2), the arms get
probe-similarity and random initial values once (§3), then each strategy rolls out the same
samples for the same number of rounds (one generation per sample per round, the same per-round
sampling seeds) and its responses are paired exactly as the `pairs` rule does (§6):

    ucb-probe   UCB over probe-similarity initial values (the method)
    ucb-random  UCB over random initial values
    ucb-query   UCB over question-similarity initial values (the paper's query ablation)
    random-k    top_k chunks drawn uniformly each round
    full        the whole context every round (SeaLong-style sampling)

    .venv/bin/python bench/strategies.py                                   # embedded data + config
    .venv/bin/python bench/strategies.py --data ../shared/data/musique-hotpotqa-sample/musique_train.json \\
        --format musique --limit 16 --backend vllm --top-k 4 --all-probes

Columns: pair yield = pairs / samples; gap = mean (chosen - rejected) strict reward over the pairs;
distinct = distinct responses per sample; evidence hit = share of rounds whose selected chunks
cover every evidence passage (``any`` = at least one); round 1 hit = the same for round 1 alone
(the initial values' choice under UCB); mean reward = rollout reward over all rounds;
gen/s = generations / rollout wall time; prompt tok/gen = prompt tokens per generation; outside
engine = share of the rollout's wall time spent outside the engine's generate calls.
Settings not given on the command line come from --config (default config.yaml).

Early stop (``rollout.early_stop``, opt-in): ``--early-stop 2,4`` adds a second table with, per
strategy and ``min_rounds``, what early stop would have given: the early-stopped rollout is the
first rounds of each sample's full rollout (:func:`longmab.stages.rollout.apply_early_stop`; a
sample's rounds depend only on its own), paired the same way. Columns: generations run (saved),
pairs, gap, distinct responses per sample and how many distinct responses were lost, and the share
of the full run's pairs whose (chosen, rejected) rewards are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = {  # name -> (initial values, rollout strategy)
    "ucb-probe": ("probe_similarity", "ucb"),
    "ucb-random": ("random", "ucb"),
    "ucb-query": ("query_similarity", "ucb"),
    "random-k": ("probe_similarity", "random"),
    "full": ("probe_similarity", "full"),
}


class CountingEngine:
    """Wraps an engine; sums the prompt and generated tokens of its generate calls."""

    def __init__(self, engine):
        self.engine = engine
        self.prompt_tokens = 0
        self.generated_tokens = 0

    def generate(self, conversations, sampling, seeds):
        out = self.engine.generate(conversations, sampling, seeds)
        stats = getattr(self.engine, "last_stats", None) or {}
        self.prompt_tokens += int(stats.get("prompt_tokens", 0))
        self.generated_tokens += int(stats.get("generated_tokens", 0))
        return out

    def count_tokens(self, text):
        return self.engine.count_tokens(text)

    def reset(self):
        self.prompt_tokens = self.generated_tokens = 0


def load_samples(path: str, fmt: str, limit: int) -> list[dict]:
    from longmab.convert import convert_file
    from longmab.validate import DataError
    from longmab.validate import load_samples as load_raw

    if fmt != "raw":
        return convert_file(path, fmt, limit)
    try:
        samples = load_raw(path)
    except DataError as exc:
        raise SystemExit(str(exc)) from None
    return samples[:limit] if limit > 0 else samples


def policy_path(config: dict) -> str:
    from longmab.models import build_embedded_policy, resolve_model_path

    name = config["models"]["policy"]
    if name != "embedded":
        return resolve_model_path(name)
    built = ROOT / "results" / "models" / "policy"
    if not (built / "config.json").exists():
        build_embedded_policy(built, config["engine"]["dtype"])
    return str(built)


def fmt(x, spec=".2f") -> str:
    return "–" if x is None else format(x, spec)


def table(results: list[dict]) -> str:
    lines = [("| strategy | samples | pair yield | gap | distinct | evidence hit all [95 % CI] / any | "
              "random chunks (all) | round 1 hit (all) | mean reward | gen/s | prompt tok/gen | outside engine |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ci = r.get("evidence_all_ci") or [None, None]
        lines.append(
            f"| {r['strategy']} | {r['samples']} | {fmt(r['pair_yield'])} | {fmt(r['gap'])} | "
            f"{fmt(r['distinct'], '.1f')} | {fmt(r['evidence_all'])} [{fmt(ci[0])}, {fmt(ci[1])}] / "
            f"{fmt(r['evidence_any'])} | {fmt(r.get('evidence_chance'))} | {fmt(r['evidence_round1'])} | "
            f"{fmt(r['mean_reward'], '.3f')} | {fmt(r['gen_per_s'])} | {fmt(r['prompt_tokens_per_gen'], '.0f')} | "
            f"{fmt(100 * r['overhead_share'], '.2f')} % |")
    return "\n".join(lines)


def stop_table(stops: list[dict]) -> str:
    lines = [("| strategy | min_rounds | samples stopped | generations (saved) | pairs (full) | gap (full) | "
              "distinct (full) | distinct lost | same pair rewards |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for s in stops:
        lines.append(
            f"| {s['strategy']} | {s['min_rounds']} | {s['stopped']} | {s['generations']} / {s['generations_full']} "
            f"({100 * s['saved']:.0f} %) | {s['pairs']} ({s['pairs_full']}) | {fmt(s['gap'])} ({fmt(s['gap_full'])}) | "
            f"{fmt(s['distinct'], '.1f')} ({fmt(s['distinct_full'], '.1f')}) | {s['distinct_lost']} | "
            f"{fmt(s['same_rewards'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--data", default=None, help="samples (default: the config's data.train)")
    ap.add_argument("--format", default="raw", choices=["raw", "musique", "hotpotqa"])
    ap.add_argument("--limit", type=int, default=0, help="first N samples (0: all)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--top-k", type=int)
    ap.add_argument("--chunk-size", type=int)
    ap.add_argument("--max-tokens", type=int)
    ap.add_argument("--temperature", type=float)
    ap.add_argument("--backend", choices=["vllm", "transformers"])
    ap.add_argument("--model", help="policy folder (default: the config's models.policy; embedded = built once "
                                    "into results/models/policy)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--all-probes", action="store_true",
                    help="also roll out samples whose probe answer does not match (not the method's filter)")
    ap.add_argument("--early-stop", default="", metavar="M1,M2",
                    help="also measure early stop with these min_rounds (e.g. 2,4)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    stop_rounds = [int(x) for x in args.early_stop.split(",") if x.strip()]

    from longmab.config import load_config
    from longmab.engines import SamplingConfig, make_engine
    from longmab.evidence import evidence_hit_rates
    from longmab.logs import setup_logging
    from longmab.prompts import load_templates
    from longmab.stages.embed import initial_values, load_encoder
    from longmab.stages.pairs import build_pairs
    from longmab.stages.probe import probe_sampling, run_probe
    from longmab.stages.rollout import EarlyStop, apply_early_stop, run_rollout

    setup_logging()  # per-round progress of probe and rollout on stderr
    config = load_config(args.config)
    for key, section, name in [("rounds", "rollout", "rounds"), ("top_k", "rollout", "top_k"),
                               ("chunk_size", "chunking", "chunk_size"), ("max_tokens", "sampling", "max_tokens"),
                               ("temperature", "sampling", "temperature"), ("backend", "engine", "backend")]:
        if getattr(args, key) is not None:
            config[section][name] = getattr(args, key)
    seed = config["seed"] if args.seed is None else args.seed
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        ap.error(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}")
    data = args.data or str(ROOT / config["data"]["train"])
    samples = load_samples(data, args.format, args.limit)
    templates = load_templates(config["prompts"])
    sampling = SamplingConfig.from_dict(config["sampling"])
    rounds, top_k = config["rollout"]["rounds"], config["rollout"]["top_k"]
    eng = config["engine"]

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = os.getloadavg()
    print(f"Strategies benchmark, started {started}; {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; load {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}", flush=True)
    print(f"data {data} ({args.format}, {len(samples)} samples); engine {eng['backend']} {eng['dtype']}; "
          f"rounds {rounds}, top_k {top_k}, chunk_size {config['chunking']['chunk_size']}, sampling "
          f"{vars(sampling)}, seed {seed}", flush=True)

    t = time.perf_counter()
    model = args.model or policy_path(config)
    engine = CountingEngine(make_engine(eng["backend"], model, dtype=eng["dtype"],
                                        max_model_len=eng["max_model_len"], seed=seed))
    start_s = time.perf_counter() - t
    results: list[dict] = []
    stops: list[dict] = []
    try:
        t = time.perf_counter()
        rows, probe_stats = run_probe(samples, engine, templates, probe_sampling(config["sampling"]),
                                      config["chunking"], seed, keep_unmatched=args.all_probes)
        probe_s = time.perf_counter() - t
        print(f"engine start {start_s:.1f} s; probe {probe_s:.1f} s: kept {probe_stats['kept']}/{len(samples)}, "
              f"rolling out {len(rows)} samples, {probe_stats['mean_chunks']:.1f} chunks each", flush=True)
        encode = load_encoder(config["models"]["embedder"], trust_remote_code=config["models"]["trust_remote_code"])
        init = {m: initial_values(rows, m, seed, encode, config["models"]["embedder_query_prefix"])
                for m in {STRATEGIES[n][0] for n in names}}
        tok = engine.engine.tokenizer
        for name in names:
            method, strategy = STRATEGIES[name]
            engine.reset()
            out, stats = run_rollout(init[method], engine, templates, sampling, rounds, top_k, seed,
                                     config["reward"]["subem"], strategy=strategy)
            def pair(rows):
                return build_pairs(rows, templates, lambda s: tok.encode(s, add_special_tokens=False),
                                   lambda ids: tok.decode(ids), config["pairs"]["max_prompt_length"],
                                   config["pairs"]["reserve_tokens"], seed, config["reward"]["subem"])

            pairs, pstats = pair(out)
            for m in stop_rounds:
                cut = apply_early_stop(out, EarlyStop(enabled=True, min_rounds=m), config["reward"]["subem"])
                cpairs, cstats = pair(cut)
                gens = sum(len(r["rounds"]) for r in cut)
                full_gens = sum(len(r["rounds"]) for r in out)
                lost = sum(len({x["response"] for x in a["rounds"]}) - len({x["response"] for x in b["rounds"]})
                           for a, b in zip(out, cut))
                kept_pairs = {p["id"]: (p["chosen_reward"], p["rejected_reward"]) for p in cpairs}
                stops.append({
                    "strategy": name, "min_rounds": m, "generations": gens, "generations_full": full_gens,
                    "saved": 1 - gens / full_gens if full_gens else 0.0,
                    "stopped": sum(len(a["rounds"]) > len(b["rounds"]) for a, b in zip(out, cut)),
                    "pairs": len(cpairs), "pairs_full": len(pairs),
                    "gap": mean(p["chosen_reward"] - p["rejected_reward"] for p in cpairs) if cpairs else None,
                    "gap_full": mean(p["chosen_reward"] - p["rejected_reward"] for p in pairs) if pairs else None,
                    "distinct": cstats["mean_distinct_responses"], "distinct_full": pstats["mean_distinct_responses"],
                    "distinct_lost": lost,
                    "same_rewards": (sum(kept_pairs.get(p["id"]) == (p["chosen_reward"], p["rejected_reward"])
                                         for p in pairs) / len(pairs)) if pairs else None,
                })
            ev = evidence_hit_rates(out)
            rewards = [r["reward"] for row in out for r in row["rounds"]]
            res = {
                "strategy": name, "init": method, "rollout_strategy": strategy, "samples": len(out),
                "pairs": len(pairs), "pair_yield": len(pairs) / len(out) if out else None,
                "gap": mean(p["chosen_reward"] - p["rejected_reward"] for p in pairs) if pairs else None,
                "distinct": pstats["mean_distinct_responses"] if out else None,
                "evidence_all": ev["all"], "evidence_any": ev["any"], "evidence_round1": ev["round1_all"],
                "evidence_rounds": ev["rounds"], "evidence_all_ci": ev["all_ci"], "evidence_chance": ev["chance_all"],
                "evidence_per_round": [r["all"] for r in ev["per_round"]],
                "mean_reward": mean(rewards) if rewards else None,
                "generations": stats["generations"], "seconds": stats["seconds_total"],
                "gen_per_s": stats["generations"] / stats["seconds_total"] if stats["seconds_total"] else None,
                "prompt_tokens_per_gen": engine.prompt_tokens / stats["generations"] if stats["generations"] else None,
                "generated_tokens": engine.generated_tokens, "overhead_share": stats["overhead_share"],
            }
            results.append(res)
            print(f"{name}: {res['pairs']} pairs, {stats['generations']} generations in {stats['seconds_total']:.1f} s",
                  flush=True)
    finally:
        close = getattr(engine.engine, "close", None)
        if close:
            close()
    load1 = os.getloadavg()
    print(f"\nload at the end {load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f}\n")
    print(table(results))
    if stops:
        print()
        print(stop_table(stops))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "started": started, "data": data, "format": args.format, "samples_in": len(samples),
            "probe": {k: v for k, v in probe_stats.items() if k != "dropped_ids"}, "probe_seconds": probe_s,
            "engine": eng, "engine_start_seconds": start_s, "rounds": rounds, "top_k": top_k,
            "chunk_size": config["chunking"]["chunk_size"], "sampling": vars(sampling), "seed": seed,
            "all_probes": args.all_probes, "load_start": load0, "load_end": load1, "results": results,
            "early_stop": stops,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

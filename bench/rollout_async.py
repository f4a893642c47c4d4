"""Rollout schedules side by side: round-synchronous vs asynchronous (continuous batching).

One process, one engine: the samples are chunked with the policy tokenizer and get seeded random
initial values (no probe, no embedder: the schedule does not depend on where the values come from),
then the same rollout runs with ``mode="sync"`` and ``mode="async"`` (``--repeat`` alternates
them), vLLM's prefix cache reset before each run so neither reuses the other's prompts. The vLLM
engine's ``llm_engine.step`` is wrapped to record every engine step (wall time and requests in
flight), for both schedules alike.

    .venv/bin/python bench/rollout_async.py --json results/bench/rollout-async.json
    .venv/bin/python bench/rollout_async.py --samples 8 --rounds 4 --max-tokens 512 --backend vllm

Columns: wall = the rollout's wall time; gen/s = generations per second; tok/s = generated tokens
(vLLM's count, end-of-turn token included) per second; steps = engine steps; occupancy = mean
requests in flight over the run's wall time (time-weighted, from the step log) / samples;
mean batch = mean requests in flight per step; identical = the rollout rows equal the first sync
run's byte for byte. The JSON keeps every response's token count and the step log, for
bench/rollout_sim.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))
sys.path.insert(0, str(ROOT / "bench"))


class StepLog:
    """Wraps ``llm.llm_engine.step``: one ``(t_end, seconds, in_flight_before, prefill)`` per step,
    ``prefill`` = requests were added since the previous step (so this step prefilled prompts)."""

    def __init__(self, llm_engine):
        self.core = llm_engine
        self.inner = llm_engine.step
        self.steps: list[tuple[float, float, int, bool]] = []
        self.after = 0
        llm_engine.step = self.step

    def step(self):
        n = self.core.get_num_unfinished_requests()
        t = time.perf_counter()
        out = self.inner()
        now = time.perf_counter()
        self.steps.append((now, now - t, n, n > self.after))
        self.after = self.core.get_num_unfinished_requests()
        return out

    def take(self):
        s, self.steps, self.after = self.steps, [], 0
        return s


def build_rows(samples, tokenizer, chunking, seed):
    from longmab.chunking import chunk_text
    from longmab.stages.embed import initial_values

    count = lambda s: len(tokenizer.encode(s, add_special_tokens=False))
    rows = [dict(s, chunks=chunk_text(s["context"], count, chunking["chunk_size"],
                                      chunking.get("overlap_fragments", 2), chunking.get("min_fragments", 2)))
            for s in samples]
    return initial_values(rows, "random", seed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--data", default=None, help="samples (default: the config's data.train)")
    ap.add_argument("--format", default="raw", choices=["raw", "musique", "hotpotqa"])
    ap.add_argument("--samples", type=int, default=8, help="first N samples = the shard (default 8)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--top-k", type=int)
    ap.add_argument("--chunk-size", type=int)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--temperature", type=float)
    ap.add_argument("--backend", choices=["vllm", "transformers"], default="vllm")
    ap.add_argument("--model", help="policy folder (default: the config's models.policy)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--repeat", type=int, default=1, help="sync/async pairs, alternating (default 1)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    from longmab.config import load_config
    from longmab.engines import SamplingConfig, make_engine
    from longmab.logs import setup_logging
    from longmab.prompts import load_templates
    from longmab.stages.rollout import run_rollout
    from rollout_sim import fit_step_cost
    from strategies import load_samples, policy_path

    setup_logging()
    config = load_config(args.config)
    for key, section, name in [("top_k", "rollout", "top_k"), ("chunk_size", "chunking", "chunk_size"),
                               ("temperature", "sampling", "temperature")]:
        if getattr(args, key) is not None:
            config[section][name] = getattr(args, key)
    config["sampling"]["max_tokens"] = args.max_tokens
    seed = config["seed"] if args.seed is None else args.seed
    data = args.data or str(ROOT / config["data"]["train"])
    samples = load_samples(data, args.format, args.samples)
    templates = load_templates(config["prompts"])
    sampling = SamplingConfig.from_dict(config["sampling"])
    top_k, eng = config["rollout"]["top_k"], config["engine"]

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = os.getloadavg()
    print(f"Rollout schedules, started {started}; {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; load {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}", flush=True)
    t = time.perf_counter()
    model = args.model or policy_path(config)
    engine = make_engine(args.backend, model, dtype=eng["dtype"], max_model_len=eng["max_model_len"], seed=seed)
    start_s = time.perf_counter() - t
    rows = build_rows(samples, engine.tokenizer, config["chunking"], seed)
    print(f"data {data} ({len(rows)} samples, {sum(len(r['chunks']) for r in rows) / len(rows):.1f} chunks each); "
          f"engine {args.backend} {eng['dtype']} (start {start_s:.1f} s); rounds {args.rounds}, top_k {top_k}, "
          f"sampling {vars(sampling)}, seed {seed}", flush=True)
    llm = getattr(engine, "llm", None)
    steplog = StepLog(llm.llm_engine) if llm is not None else None
    runs, reference = [], None
    try:
        for rep in range(args.repeat):
            for mode in ("sync", "async"):
                if llm is not None:
                    llm.reset_prefix_cache()
                la = os.getloadavg()[0]
                out, stats = run_rollout(rows, engine, templates, sampling, args.rounds, top_k, seed,
                                         config["reward"]["subem"], mode=mode)
                steps = steplog.take() if steplog else []
                text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out)
                reference = reference if reference is not None else text
                wall = stats["seconds_total"]
                area = sum(dt * n for _, dt, n, _ in steps)
                lengths = [[len(engine.tokenizer.encode(r["response"], add_special_tokens=False)) for r in row["rounds"]]
                           for row in out]
                gen_tokens = sum(map(sum, lengths))
                res = {"mode": mode, "repeat": rep, "wall_s": wall, "generations": stats["generations"],
                       "gen_per_s": stats["generations"] / wall, "tokens": gen_tokens, "tok_per_s": gen_tokens / wall,
                       "steps": len(steps) or None,
                       "occupancy": area / (wall * len(rows)) if steps else None,
                       "mean_batch": (sum(n for _, _, n, _ in steps) / len(steps)) if steps else None,
                       "stream_occupancy": stats["occupancy"],
                       "identical": text == reference, "sha": hashlib.sha256(text.encode()).hexdigest()[:8],
                       "load_before": la, "load_after": os.getloadavg()[0],
                       "decode_fit": fit_step_cost([[(dt, n, pre) for _, dt, n, pre in steps]]), "lengths": lengths,
                       "step_log": [[round(dt, 5), n, int(pre)] for _, dt, n, pre in steps]}
                runs.append(res)
                print(f"{mode} #{rep}: {wall:.1f} s, {stats['generations']} generations, {gen_tokens} tokens, "
                      f"{len(steps)} steps, load {la:.1f}->{res['load_after']:.1f}", flush=True)
    finally:
        engine.close()
    load1 = os.getloadavg()
    print(f"\nload at the end {load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f}\n")
    print(table(runs))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "started": started, "data": data, "samples": len(rows), "rounds": args.rounds, "top_k": top_k,
            "chunk_size": config["chunking"]["chunk_size"], "sampling": vars(sampling), "seed": seed,
            "backend": args.backend, "dtype": eng["dtype"], "engine_start_s": start_s,
            "load_start": load0, "load_end": load1, "runs": runs}, indent=1) + "\n")
    return 0


def fmt(x, spec=".2f"):
    return "–" if x is None else format(x, spec)


def table(runs):
    lines = ["| schedule | wall (s) | gen/s | tok/s | steps | occupancy | mean batch | identical | load 1-min before/after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['mode']} #{r['repeat']} | {r['wall_s']:.1f} | {r['gen_per_s']:.3f} | {r['tok_per_s']:.1f} | "
                     f"{fmt(r['steps'], 'd')} | {fmt(r['occupancy'])} | {fmt(r['mean_batch'], '.1f')} | "
                     f"{'yes' if r['identical'] else 'NO'} | {r['load_before']:.1f}/{r['load_after']:.1f} |")
    syncs = [r for r in runs if r["mode"] == "sync"]
    asyncs = [r for r in runs if r["mode"] == "async"]
    if syncs and asyncs:
        s = sum(r["wall_s"] for r in syncs) / len(syncs)
        a = sum(r["wall_s"] for r in asyncs) / len(asyncs)
        lines.append("")
        lines.append(f"async / sync: wall {a / s:.2f}x (speed-up {s / a:.2f}x)" + (
            f", steps {asyncs[0]['steps'] / syncs[0]['steps']:.2f}x, occupancy {syncs[0]['occupancy']:.2f} -> "
            f"{asyncs[0]['occupancy']:.2f}" if syncs[0]["steps"] and asyncs[0]["steps"] else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the generation engines on the embedded workload shape; prints one markdown table.

The prompts are built once (from data/train.jsonl if it exists, else synthetic text) and written
to a temporary file; every variant then runs in its own subprocess (vLLM reads its environment
variables at start, and a fresh process gives each engine the same clean memory), starts the
engine, runs one ``generate`` call on those prompts with the same seeds and reports timings.

    .venv/bin/python bench/engines.py                                 # every variant once
    .venv/bin/python bench/engines.py --variants hf-fp32-t1,vllm-fp32,vllm-fp32   # repeats allowed

Columns: start = engine construction (imports, load, and for vLLM the engine processes, warm-up and,
when compiled, torch.compile); compile = "eager", or "cold"/"warm" for whether torch.compile found
a usable cache; worker cores = the cores vLLM bound its worker's OpenMP threads to ("all" = not
bound; transformers: the torch thread count); generate = wall time of the one call; prompt tok/s
and gen tok/s = tokens / generate time (over the same wall time, so neither is a pure prefill or
decode rate); total = start + generate; outputs = first 8 hex digits of the SHA-256 of all output
texts (equal digits = identical texts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (backend, engine kwargs, extra environment). On CPU the vLLM engine defaults to
# enforce_eager=True and enable_chunked_prefill=False (see longmab/engine.py); "-compiled" turns
# torch.compile back on.
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "vllm-fp32": ("vllm", {"dtype": "float32"}, {}),
    "vllm-fp32-compiled": ("vllm", {"dtype": "float32", "enforce_eager": False}, {}),
    "vllm-fp32-bind01": ("vllm", {"dtype": "float32"},
                         {"VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}),
    "vllm-fp32-nobind": ("vllm", {"dtype": "float32"}, {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}),
    "vllm-fp32-inproc": ("vllm", {"dtype": "float32"}, {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}),
    "vllm-bf16": ("vllm", {"dtype": "bfloat16"}, {}),
    "hf-fp32-t1": ("transformers", {"dtype": "float32", "batch_size": 1, "num_threads": 1}, {}),
    "hf-fp32-t2": ("transformers", {"dtype": "float32", "batch_size": 1, "num_threads": 2}, {}),
    "hf-fp32-batch8-t1": ("transformers", {"dtype": "float32", "batch_size": 8, "num_threads": 1}, {}),
    "hf-bf16-t1": ("transformers", {"dtype": "bfloat16", "batch_size": 1, "num_threads": 1}, {}),
}

WORDS = [
    *["the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "his", "her", "it", "an", "were", "are", "which", "this"],
    *["be", "or", "has", "had", "first", "new", "one", "also", "after", "their", "river", "city", "album", "film", "born", "king", "music", "war"],
    *["school", "team", "league", "season", "village", "church", "county", "queen", "song", "bridge", "station", "director"],
    *["novel", "army", "island", "mountain", "company", "founded", "released", "played", "married", "died", "located", "capital"],
]


def synthetic_passage(rng: random.Random, n_words: int) -> str:
    out, sentence = [], []
    for _ in range(n_words):
        sentence.append(rng.choice(WORDS))
        if len(sentence) >= rng.randint(8, 20):
            s = " ".join(sentence)
            out.append(s[0].upper() + s[1:] + ".")
            sentence = []
    return " ".join(out)


def build_prompts(tokenizer, n: int, lo: int, hi: int, seed: int) -> tuple[list[list[dict]], str]:
    """``n`` single-turn chat prompts whose context sizes step evenly from ``lo`` to ``hi`` tokens."""
    rng = random.Random(seed)
    targets = [round(lo + (hi - lo) * i / max(1, n - 1)) for i in range(n)]
    train = ROOT / "data" / "train.jsonl"
    source = "synthetic text"
    samples = []
    if train.exists():
        with open(train, encoding="utf-8") as fh:
            samples = [json.loads(line) for line in fh if line.strip()]
        samples = [s for s in samples if s.get("context") and s.get("input")]
        if samples:
            source = f"data/train.jsonl ({len(samples)} samples)"
    convs = []
    for i, target in enumerate(targets):
        if samples:
            s = samples[i % len(samples)]
            context, question = s["context"], s["input"]
        else:
            context = "\n\n".join(
                f"Passage {j + 1}:\n{synthetic_passage(rng, 250)}" for j in range(1 + hi // 250)
            )
            question = "Which city was the album released in?"
        ids = tokenizer.encode(context, add_special_tokens=False)[:target]
        context = tokenizer.decode(ids)
        convs.append([{
            "role": "user",
            "content": f"{context}\n\nAnswer the question based on the passages above. Think step "
                       f"by step, then finish with 'Answer: <answer>'.\nQuestion: {question}",
        }])
    return convs, source


def worker(spec: dict) -> None:
    """Run one variant in this process and print ``RESULT <json>``."""
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    sys.path.insert(0, str(ROOT / "workflow_scripts"))
    from longmab.engine import SamplingConfig, make_engine

    convs = json.loads(Path(spec["prompts"]).read_text(encoding="utf-8"))
    sampling = SamplingConfig(temperature=1.0, top_p=0.95, presence_penalty=1.0, max_tokens=spec["max_tokens"])
    kw = dict(spec["kw"])
    if spec["backend"] == "vllm":
        kw.setdefault("max_model_len", spec["max_model_len"])
    t0 = time.perf_counter()
    engine = make_engine(spec["backend"], spec["model"], seed=0, **kw)
    start = time.perf_counter() - t0
    seeds = list(range(1000, 1000 + len(convs)))
    t1 = time.perf_counter()
    outs = engine.generate(convs, sampling, seeds)
    gen = time.perf_counter() - t1
    stats = getattr(engine, "last_stats", {})
    threads = None
    if spec["backend"] != "vllm":
        import torch

        threads = torch.get_num_threads()
    res = {
        "start_s": start, "generate_s": gen, "threads": threads,
        "prompt_tokens": stats.get("prompt_tokens"), "generated_tokens": stats.get("generated_tokens"),
        "n": len(outs), "empty": sum(1 for o in outs if not o.strip()),
        "outputs_sha": hashlib.sha256(json.dumps(outs).encode()).hexdigest()[:8],
    }
    print("RESULT " + json.dumps(res), flush=True)
    engine.close()


def run_variant(name: str, index: int, prompts: Path, args) -> dict:
    backend, kw, env_extra = VARIANTS[name]
    spec = {"backend": backend, "kw": kw, "model": args.model, "prompts": str(prompts),
            "max_tokens": args.max_tokens, "max_model_len": args.max_model_len}
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    env.update(env_extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "workflow_scripts"), env.get("PYTHONPATH")]))
    log_path = Path(args.log_dir) / f"{index:02d}-{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    try:
        with open(log_path, "w") as log:  # vLLM logs to stdout: keep everything in the log
            proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            rc = proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and vLLM's engine processes
        proc.wait()
        rc = "timeout"
    wall = time.perf_counter() - t0
    text = log_path.read_text(errors="replace")
    res = {"name": name, "rc": rc, "wall_s": wall, "load_before": load0, "load_after": os.getloadavg()[0]}
    for line in text.splitlines():
        if line.startswith("RESULT "):
            res.update(json.loads(line[len("RESULT "):]))
    if backend == "vllm":
        if "saved AOT compiled function" in text:
            res["cache"] = "cold"
        elif "Directly load AOT compilation" in text:
            res["cache"] = "warm"
        else:
            res["cache"] = "eager"
        m = re.findall(r"core ids=\[([^\]]*)\]", text)
        res["cores"] = m[0].replace(" ", "") if m else "all"
    else:
        res["cache"] = "-"
        res["cores"] = f"{res['threads']} thread(s)" if res.get("threads") else "-"
    print(f"# {name}: rc={rc} wall={wall:.0f}s {json.dumps(res)}", file=sys.stderr, flush=True)
    return res


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def table(results: list[dict]) -> str:
    head = ("| variant | start (s) | compile | worker cores | generate (s) | prompt tok | gen tok | "
            "prompt tok/s | gen tok/s | total (s) | outputs | load 1-min before/after |")
    lines = [head, "|" + "|".join(["---"] * 12) + "|"]
    for r in results:
        load = f"{r['load_before']:.1f}/{r['load_after']:.1f}"
        if not (r.get("rc") == 0 and "generate_s" in r):
            lines.append(f"| {r['name']} | {fmt(r.get('start_s'))} | {r.get('cache', '-')} | "
                         f"{r.get('cores', '-')} | failed ({r.get('rc')}, after {r['wall_s']:.0f} s) "
                         f"| | | | | | | {load} |")
            continue
        g = r["generate_s"]
        lines.append(
            f"| {r['name']} | {fmt(r['start_s'])} | {r['cache']} | {r['cores']} | {fmt(g)} | "
            f"{r['prompt_tokens']} | {r['generated_tokens']} | {fmt(r['prompt_tokens'] / g)} | "
            f"{fmt(r['generated_tokens'] / g, 2)} | {fmt(r['start_s'] + g)} | {r['outputs_sha']} | {load} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "results" / "models" / "policy"))
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated, repeats allowed; known: " + ", ".join(VARIANTS))
    ap.add_argument("--n-prompts", type=int, default=8)
    ap.add_argument("--min-tokens", type=int, default=300, help="context tokens of the shortest prompt")
    ap.add_argument("--max-context", type=int, default=1500, help="context tokens of the longest prompt")
    ap.add_argument("--max-tokens", type=int, default=128, help="max new tokens per prompt")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=900, help="seconds per variant (caps slow variants)")
    ap.add_argument("--log-dir", default=str(ROOT / "results" / "bench" / "engines"))
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants: {unknown}")

    from transformers import AutoTokenizer

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    tok = AutoTokenizer.from_pretrained(args.model)
    convs, source = build_prompts(tok, args.n_prompts, args.min_tokens, args.max_context, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.json"
        prompts.write_text(json.dumps(convs), encoding="utf-8")
        results = [run_variant(n, i, prompts, args) for i, n in enumerate(names)]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"Engines benchmark, started {started}; {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {args.n_prompts} chat prompts of {args.min_tokens}-"
          f"{args.max_context} context tokens from {source}; max_tokens {args.max_tokens}, "
          f"temperature 1.0, top_p 0.95, presence_penalty 1.0, seeds 1000-{999 + args.n_prompts}\n")
    print(table(results))


if __name__ == "__main__":
    main()

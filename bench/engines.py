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

Phases (for bench/roofline.py): each worker first runs a one-token warm-up request, then the same
prompts with ``max_tokens=1`` (prefill only; vLLM's prefix cache is reset afterwards, so the timed
call prefills again), then the timed call. ``prefill_s`` is that prefill-only call and
``gen_lengths`` the generated tokens of each request in the timed call (re-tokenized text, +1 for an
end-of-turn token when a request stopped before ``max_tokens``), so the timed call's decode time is
``generate_s - prefill_s`` and its batch at every decode step is known. Pass ``--no-phases`` for the
old single call.

Concurrent variants (``-x2...``) start that many workers at once, each with its share of the prompts
(round-robin) and its own environment (``-bound``: vLLM worker ``i`` bound to core ``i``, no core
reserved), the way two shard jobs of the pipeline share the machine; their row sums the tokens and
takes the longest worker's times.
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
# enforce_eager=True and enable_chunked_prefill=False (see longmab/engines/vllm_engine.py); "-compiled" turns
# torch.compile back on.
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "vllm-fp32": ("vllm", {"dtype": "float32"}, {}),
    "vllm-fp32-auto": ("vllm", {"dtype": "float32"}, {"VLLM_CPU_OMP_THREADS_BIND": "auto"}),
    "vllm-fp32-compiled": ("vllm", {"dtype": "float32", "enforce_eager": False}, {}),
    "vllm-fp32-bind01": ("vllm", {"dtype": "float32"},
                         {"VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}),
    "vllm-fp32-nobind": ("vllm", {"dtype": "float32"}, {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}),
    "vllm-fp32-inproc": ("vllm", {"dtype": "float32"}, {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}),
    "vllm-bf16": ("vllm", {"dtype": "bfloat16"}, {}),
    # one process: engine core in the caller (no spawned EngineCore) and the worker in it ("uni"
    # executor, no spawned worker); the core binding of the pipeline still applies (issue #22)
    "vllm-bf16-oneproc": ("vllm", {"dtype": "bfloat16", "distributed_executor_backend": "uni"},
                          {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}),
    "vllm-fp32-spawned": ("vllm", {"dtype": "float32", "distributed_executor_backend": "mp"},
                          {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}),
    "vllm-bf16-spawned": ("vllm", {"dtype": "bfloat16", "distributed_executor_backend": "mp"},
                          {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}),
    "hf-fp32-t1": ("transformers", {"dtype": "float32", "batch_size": 1, "num_threads": 1}, {}),
    "hf-fp32-t2": ("transformers", {"dtype": "float32", "batch_size": 1, "num_threads": 2}, {}),
    "hf-fp32-batch8-t1": ("transformers", {"dtype": "float32", "batch_size": 8, "num_threads": 1}, {}),
    "hf-bf16-t1": ("transformers", {"dtype": "bfloat16", "batch_size": 1, "num_threads": 1}, {}),
    # both cores for one worker, no core reserved for vLLM's engine-core / front-end processes
    "vllm-fp32-bind01-kv1": ("vllm", {"dtype": "float32"},
                             {"VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
                              "VLLM_CPU_KVCACHE_SPACE": "1"}),
    "vllm-fp32-seqs8": ("vllm", {"dtype": "float32", "max_num_seqs": 8}, {}),
    "vllm-fp32-noprefix": ("vllm", {"dtype": "float32", "enable_prefix_caching": False}, {}),
}

#: Concurrent variants: name -> (base variant, workers, per-worker environment or None). "-auto"
#: forces vLLM's own binding (``VLLM_CPU_OMP_THREADS_BIND=auto``: every instance picks core 0 on a
#: 2-CPU machine, as two shard jobs of the pipeline did before it claimed cores); "-claim" is what
#: the pipeline does now (``longmab.engines.bind_vllm_cpu_cores``: each engine locks a free core);
#: "-bound" binds worker i to core i by hand.
CONCURRENT: dict[str, tuple[str, int, list[dict] | None]] = {
    "vllm-fp32-x2-auto": ("vllm-fp32", 2, [{"VLLM_CPU_OMP_THREADS_BIND": "auto"} for _ in range(2)]),
    "vllm-fp32-x2-claim": ("vllm-fp32", 2, None),
    "vllm-fp32-x2-bound": ("vllm-fp32", 2, [
        {"VLLM_CPU_OMP_THREADS_BIND": str(i), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"} for i in range(2)]),
    "hf-fp32-t1-x2": ("hf-fp32-t1", 2, None),
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


def _gen_lengths(tokenizer, outs: list[str], max_tokens: int, backend: str) -> list[int]:
    """Generated tokens per request: the text re-tokenized, +1 for the end-of-turn token vLLM counts
    when the request stopped before ``max_tokens`` (transformers does not count it)."""
    out = []
    for text in outs:
        n = min(len(tokenizer.encode(text, add_special_tokens=False)), max_tokens)
        if backend == "vllm" and n < max_tokens:
            n += 1
        out.append(n)
    return out


def worker(spec: dict) -> None:
    """Run one variant in this process and print ``RESULT <json>``."""
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    sys.path.insert(0, str(ROOT / "workflow_scripts"))
    from longmab.engines import SamplingConfig, make_engine

    convs = json.loads(Path(spec["prompts"]).read_text(encoding="utf-8"))
    convs = convs[spec.get("part", 0)::spec.get("parts", 1)]
    samp = spec.get("sampling") or {"temperature": 1.0, "top_p": 0.95, "presence_penalty": 1.0}
    sampling = SamplingConfig(max_tokens=spec["max_tokens"], **samp)
    kw = dict(spec["kw"])
    if spec["backend"] == "vllm":
        kw.setdefault("max_model_len", spec["max_model_len"])
    t0 = time.perf_counter()
    engine = make_engine(spec["backend"], spec["model"], seed=0, **kw)
    start = time.perf_counter() - t0
    seeds = list(range(1000 + spec.get("part", 0), 1000 + spec.get("part", 0) + len(convs) * spec.get("parts", 1),
                       spec.get("parts", 1)))
    prefill = None
    if spec.get("phases", True):
        one = SamplingConfig(max_tokens=1, **samp)
        engine.generate([[{"role": "user", "content": "Hello."}]], one, [7])  # warm-up
        t1 = time.perf_counter()
        engine.generate(convs, one, seeds)
        prefill = time.perf_counter() - t1
        llm = getattr(engine, "llm", None)
        if llm is not None:
            llm.reset_prefix_cache()
    t1 = time.perf_counter()
    outs = engine.generate(convs, sampling, seeds)
    gen = time.perf_counter() - t1
    stats = getattr(engine, "last_stats", {})
    threads = None
    if spec["backend"] != "vllm":
        import torch

        threads = torch.get_num_threads()
    prompt_lengths = [len(engine.tokenizer.apply_chat_template(c, tokenize=True, add_generation_prompt=True,
                                                               return_dict=False)) for c in convs]
    res = {
        "start_s": start, "generate_s": gen, "prefill_s": prefill, "threads": threads,
        "prompt_tokens": stats.get("prompt_tokens"), "generated_tokens": stats.get("generated_tokens"),
        "prompt_lengths": prompt_lengths,
        "gen_lengths": _gen_lengths(engine.tokenizer, outs, spec["max_tokens"], spec["backend"]),
        "n": len(outs), "empty": sum(1 for o in outs if not o.strip()),
        "outputs_sha": hashlib.sha256(json.dumps(outs).encode()).hexdigest()[:8],
        "outputs": outs,
    }
    print("RESULT " + json.dumps(res), flush=True)
    engine.close()


def _worker_env(env_extra: dict) -> dict:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    env.update(env_extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "workflow_scripts"), env.get("PYTHONPATH")]))
    return env


def _parse_log(text: str, backend: str) -> dict:
    res: dict = {}
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
    return res


def variant_info(name: str) -> tuple[str, dict, dict, int, list[dict] | None]:
    """``(backend, engine kwargs, environment, workers, per-worker environments)`` of a variant."""
    if name in CONCURRENT:
        base, workers, envs = CONCURRENT[name]
        backend, kw, env = VARIANTS[base]
        return backend, kw, env, workers, envs
    backend, kw, env = VARIANTS[name]
    return backend, kw, env, 1, None


def run_variant(name: str, index: int, prompts: Path, args) -> dict:
    """Run one variant (its workers in parallel for a concurrent one); the merged result dict."""
    backend, kw, env_extra, workers, envs = variant_info(name)
    sampling = {"temperature": args.temperature, "top_p": args.top_p, "presence_penalty": args.presence_penalty}
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    procs, logs = [], []
    for w in range(workers):
        spec = {"backend": backend, "kw": kw, "model": args.model, "prompts": str(prompts),
                "max_tokens": args.max_tokens, "max_model_len": args.max_model_len, "sampling": sampling,
                "phases": not args.no_phases, "part": w, "parts": workers}
        env = _worker_env({**env_extra, **((envs or [{}] * workers)[w])})
        suffix = f".{w}" if workers > 1 else ""
        log_path = Path(args.log_dir) / f"{index:02d}-{name}{suffix}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        logs.append(log_path)
        with open(log_path, "w") as log:  # vLLM logs to stdout: keep everything in the log
            procs.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    rcs = []
    for proc in procs:
        try:
            rcs.append(proc.wait(timeout=max(1.0, args.timeout - (time.perf_counter() - t0))))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and vLLM's engine processes
            proc.wait()
            rcs.append("timeout")
    wall = time.perf_counter() - t0
    parts = [_parse_log(p.read_text(errors="replace"), backend) for p in logs]
    rc = 0 if all(r == 0 for r in rcs) else next(r for r in rcs if r != 0)
    res = {"name": name, "rc": rc, "wall_s": wall, "load_before": load0, "load_after": os.getloadavg()[0],
           "backend": backend, "workers": workers}
    if workers == 1:
        res.update(parts[0])
    elif all("generate_s" in p for p in parts):
        res.update({
            "start_s": max(p["start_s"] for p in parts), "generate_s": max(p["generate_s"] for p in parts),
            "prefill_s": None if any(p["prefill_s"] is None for p in parts) else max(p["prefill_s"] for p in parts),
            "threads": parts[0]["threads"],
            "prompt_tokens": sum(p["prompt_tokens"] for p in parts),
            "generated_tokens": sum(p["generated_tokens"] for p in parts),
            "n": sum(p["n"] for p in parts), "empty": sum(p["empty"] for p in parts),
            "cache": parts[0]["cache"], "cores": "+".join(p["cores"] for p in parts),
            "parts": [{k: p[k] for k in ("start_s", "generate_s", "prefill_s", "prompt_lengths", "gen_lengths")}
                      for p in parts],
        })
        # request j went to worker j % workers: back to the order of the single-worker run
        n = res["n"]
        for key in ("prompt_lengths", "gen_lengths", "outputs"):
            merged = [None] * n
            for w, p in enumerate(parts):
                merged[w::workers] = p[key]
            res[key] = merged
        res["outputs_sha"] = hashlib.sha256(json.dumps(res["outputs"]).encode()).hexdigest()[:8]
    print(f"# {name}: rc={rc} wall={wall:.0f}s "
          f"{json.dumps({k: v for k, v in res.items() if k not in ('outputs', 'parts')})}",
          file=sys.stderr, flush=True)
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


def add_args(ap: argparse.ArgumentParser) -> None:
    """The workload options (shared with bench/roofline.py)."""
    ap.add_argument("--model", default=str(ROOT / "results" / "models" / "policy"))
    ap.add_argument("--n-prompts", type=int, default=8)
    ap.add_argument("--min-tokens", type=int, default=300, help="context tokens of the shortest prompt")
    ap.add_argument("--max-context", type=int, default=1500, help="context tokens of the longest prompt")
    ap.add_argument("--max-tokens", type=int, default=128, help="max new tokens per prompt")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--presence-penalty", type=float, default=1.0)
    ap.add_argument("--no-phases", action="store_true",
                    help="one timed call only (no warm-up and prefill-only calls before it)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per variant (caps slow variants)")
    ap.add_argument("--log-dir", default=str(ROOT / "results" / "bench" / "engines"))


def write_prompts(args, path: Path) -> str:
    """Build the workload's prompts into ``path`` (JSON); returns where their text came from."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    convs, source = build_prompts(tok, args.n_prompts, args.min_tokens, args.max_context, args.seed)
    path.write_text(json.dumps(convs), encoding="utf-8")
    return source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(ap)
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated, repeats allowed; known: " + ", ".join([*VARIANTS, *CONCURRENT]))
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS and v not in CONCURRENT]
    if unknown:
        ap.error(f"unknown variants: {unknown}")

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.json"
        source = write_prompts(args, prompts)
        results = [run_variant(n, i, prompts, args) for i, n in enumerate(names)]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"Engines benchmark, started {started}; {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {args.n_prompts} chat prompts of {args.min_tokens}-"
          f"{args.max_context} context tokens from {source}; max_tokens {args.max_tokens}, "
          f"temperature {args.temperature}, top_p {args.top_p}, presence_penalty {args.presence_penalty}, "
          f"seeds 1000-{999 + args.n_prompts}\n")
    print(table(results))


if __name__ == "__main__":
    main()

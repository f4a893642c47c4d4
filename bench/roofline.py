"""Roofline of this machine for a policy model, and every engine variant as a share of it; one run.

1. **Machine** (torch, in this process, 1 thread and all cores): the fp32 matmul rate (a 2048^3 GEMM,
   and the model's own prefill GEMMs at 512 tokens, FLOP-weighted), and the memory bandwidth (a
   streaming ``sum`` over 1 GiB, and batch-1 GEMVs over distinct matrices shaped like the model's
   layers, as many bytes as the model's weights: what one decode step reads).
2. **Model limits** (from the model folder's ``config.json``; Llama-style decoder):
   prefill = ``2 x layer params`` FLOP per token (the LM head runs on the last token only) plus
   attention ``4 x layers x heads x head_dim x position``, at the model-shaped GEMM rate: an upper
   bound on prompt tok/s. A decode step at batch ``B`` reads every weight once (the tied LM head is
   the embedding matrix) plus each sequence's KV cache, and does ``B x (2 x all linear params +
   attention)`` FLOP; it takes at least ``max(bytes / bandwidth, FLOP / rate)`` (the GEMV bandwidth
   and the model-shaped rate of the cores used), so generated tok/s is at most
   ``B / step``, which grows with ``B`` until compute binds.
3. **Engine variants** (``bench/engines.py``'s workers, one subprocess per variant and workload):
   the same prompts prefilled alone (``max_tokens=1``) and then generated; the limit of each phase
   for exactly that work (every request's prompt length; decode steps with the batch that the
   requests' generated lengths give when all are decoded together, the best any engine can do) on
   the cores the variant used, divided by the measured time = its share of the roofline. ``call`` is
   the whole timed call's share of the limit of the **whole machine** (both phases, all cores).

    .venv/bin/python bench/roofline.py                       # the default variants and workloads
    .venv/bin/python bench/roofline.py --runs vllm-fp32@8,vllm-fp32@32,hf-fp32-t1@8 --json results/bench/roofline.json

A run is ``VARIANT@N`` (``N`` prompts; variants: ``bench/engines.py --help``). The prompts follow
the embedded rollout's shape by default: 300-600 context tokens from data/train.jsonl, max_tokens
128, temperature 0.7, top_p 0.95, presence penalty 0 (config.yaml's rollout sampling).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import engines  # bench/engines.py

DEFAULT_RUNS = ("hf-fp32-t1@8,hf-fp32-t2@8,hf-fp32-t1-x2@8,vllm-fp32@8,vllm-fp32-bind01@8,vllm-bf16@8,"
                "vllm-fp32@32,vllm-fp32-bind01@32,vllm-fp32-x2-auto@32,vllm-fp32-x2-bound@32,vllm-fp32-bind01@64")


# --------------------------------------------------------------------------------------------------
# the model


def model_shape(model_dir: str | Path) -> dict:
    """Sizes of a Llama-style decoder from its ``config.json``.

    Returns
    -------
    dict
        ``hidden``, ``intermediate``, ``layers``, ``heads``, ``kv_heads``, ``head_dim``, ``vocab``,
        ``tied`` and derived counts: ``layer_params`` (linear weights of all layers), ``head_params``
        (LM head), ``linear_params`` (both), ``kv_values_per_token`` (K and V values cached per
        token, all layers).
    """
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    h, i, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or h // nh
    V = cfg["vocab_size"]
    per_layer = h * nh * hd + 2 * h * nkv * hd + nh * hd * h + 3 * h * i  # q, k, v, o, gate/up/down
    return {
        "hidden": h, "intermediate": i, "layers": L, "heads": nh, "kv_heads": nkv, "head_dim": hd, "vocab": V,
        "tied": bool(cfg.get("tie_word_embeddings", False)), "layer_params": L * per_layer, "head_params": h * V,
        "linear_params": L * per_layer + h * V, "kv_values_per_token": L * 2 * nkv * hd,
    }


def gemm_shapes(m: dict) -> list[tuple[int, int]]:
    """(in, out) of every linear layer of one decoder layer."""
    h, i, nh, nkv, hd = m["hidden"], m["intermediate"], m["heads"], m["kv_heads"], m["head_dim"]
    return [(h, nh * hd), (h, nkv * hd), (h, nkv * hd), (nh * hd, h), (h, i), (h, i), (i, h)]


def prefill_flops(m: dict, n: int) -> float:
    """FLOP to prefill one prompt of ``n`` tokens (causal attention; LM head on the last token)."""
    attn = 4 * m["layers"] * m["heads"] * m["head_dim"] * n * (n + 1) / 2
    return 2 * m["layer_params"] * n + attn + 2 * m["head_params"]


def decode_step_terms(m: dict, contexts: list[int], rate: float, bandwidth: float,
                      bytes_per_value: int) -> tuple[float, float]:
    """``(memory seconds, compute seconds)`` of one decode step for sequences at positions ``contexts``:
    every weight and each sequence's KV cache read once at ``bandwidth`` (bytes/s), the linear layers
    and attention at ``rate`` (FLOP/s)."""
    b = len(contexts)
    ctx = sum(contexts)
    read = bytes_per_value * (m["linear_params"] + m["kv_values_per_token"] * ctx)
    flops = 2 * m["linear_params"] * b + 4 * m["layers"] * m["heads"] * m["head_dim"] * ctx
    return read / bandwidth, flops / rate


def decode_step_time(m: dict, contexts: list[int], rate: float, bandwidth: float, bytes_per_value: int) -> float:
    """Lower bound of one decode step's seconds (:func:`decode_step_terms`, the larger term)."""
    return max(decode_step_terms(m, contexts, rate, bandwidth, bytes_per_value))


def decode_limit(m: dict, prompt_lengths: list[int], gen_lengths: list[int], rate: float, bandwidth: float,
                 bytes_per_value: int) -> float:
    """Lower bound of the seconds to decode every request together (continuous batching, all start
    at once): step ``s`` holds the requests that generate more than ``s`` tokens. The first token
    comes from the prefill, so request ``j`` takes ``gen_lengths[j] - 1`` decode steps."""
    total, steps = 0.0, max((g - 1 for g in gen_lengths), default=0)
    for s in range(steps):
        ctx = [p + s + 1 for p, g in zip(prompt_lengths, gen_lengths) if g - 1 > s]
        total += decode_step_time(m, ctx, rate, bandwidth, bytes_per_value)
    return total


# --------------------------------------------------------------------------------------------------
# the machine


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure_machine(m: dict, threads: int, repeat: int = 5, dtype: str = "float32") -> dict:
    """Matmul rates (FLOP/s) and bandwidths (bytes/s) with ``threads`` torch threads (best of ``repeat``)."""
    import torch

    torch.set_num_threads(threads)
    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(0)
    out = {"threads": threads, "dtype": dtype}
    with torch.inference_mode():
        a = torch.randn(2048, 2048, generator=g).to(dt)
        b = torch.randn(2048, 2048, generator=g).to(dt)
        torch.mm(a, b)
        out["gemm_peak"] = 2 * 2048**3 / _best(lambda: torch.mm(a, b), repeat)
        # the model's prefill GEMMs at 512 tokens, FLOP-weighted (one layer's worth, then the head)
        x = torch.randn(512, max(k for k, _ in gemm_shapes(m)), generator=g).to(dt)
        ws = [torch.randn(k, n, generator=g).to(dt) for k, n in gemm_shapes(m)]

        def layer():
            for w in ws:
                torch.mm(x[:, : w.shape[0]], w)

        layer()
        flops = sum(2 * 512 * k * n for k, n in gemm_shapes(m))
        out["gemm_model"] = flops / _best(layer, repeat)
        a = b = x = ws = None  # free them (the closures above are done)
        # streaming read of 1 GiB
        big = torch.ones(2**28, dtype=torch.float32)
        big.sum()
        out["stream_read"] = big.numel() * 4 / _best(lambda: big.sum(), repeat)
        big = None
        # decode-shaped: batch-1 GEMVs over distinct model-shaped matrices, as many bytes as the weights
        per_layer = gemm_shapes(m)
        elem = torch.finfo(dt).bits // 8
        n_layers = max(1, round(m["linear_params"] * elem / (elem * sum(k * n for k, n in per_layer))))
        mats = [torch.randn(k, n, generator=g).to(dt) for _ in range(n_layers) for k, n in per_layer]
        v = torch.randn(1, max(k for k, _ in per_layer), generator=g).to(dt)
        nbytes = sum(w.numel() for w in mats) * elem

        def step():
            for w in mats:
                torch.mm(v[:, : w.shape[0]], w)

        step()
        out["gemv_read"] = nbytes / _best(step, repeat)
        mats = None
    return out


# --------------------------------------------------------------------------------------------------
# shares


def _cores_used(res: dict, ncpu: int) -> int:
    if res["backend"] == "vllm":
        ids: set[str] = set()
        for part in str(res.get("cores", "all")).split("+"):
            if part == "all":
                return ncpu
            for tok in part.split(","):
                if "-" in tok:
                    lo, hi = tok.split("-")
                    ids.update(str(c) for c in range(int(lo), int(hi) + 1))
                elif tok:
                    ids.add(tok)
        return max(1, min(ncpu, len(ids)))
    return max(1, min(ncpu, int(res.get("threads") or 1) * int(res.get("workers", 1))))


def shares(res: dict, m: dict, machine: dict[int, dict], ncpu: int) -> dict:
    """The roofline shares of one engine run (see the module docstring)."""
    cores = _cores_used(res, ncpu)
    mach = machine[min(machine, key=lambda t: abs(t - cores))]
    full = machine[max(machine)]
    bpv = 2 if "bf16" in res["name"] else 4
    pl, gl = res["prompt_lengths"], res["gen_lengths"]
    pre_flops = sum(prefill_flops(m, n) for n in pl)
    pre_lim = pre_flops / mach["gemm_model"]
    dec_lim = decode_limit(m, pl, gl, mach["gemm_model"], mach["gemv_read"], bpv)
    call_lim = pre_flops / full["gemm_model"] + decode_limit(m, pl, gl, full["gemm_model"], full["gemv_read"], bpv)
    out = {"cores": cores, "prefill_limit_s": pre_lim, "decode_limit_s": dec_lim, "call_limit_machine_s": call_lim,
           "mean_batch": (sum(g - 1 for g in gl) / max(1, max(g - 1 for g in gl))) if gl else 0.0}
    pre = res.get("prefill_s")
    gen = res["generate_s"]
    dec_tokens = sum(g - 1 for g in gl)
    out["prompt_tok_s"] = sum(pl) / pre if pre else None
    out["prompt_tok_s_limit"] = sum(pl) / pre_lim
    out["prefill_share"] = pre_lim / pre if pre else None
    dec = gen - pre if pre else None
    out["decode_s"] = dec
    out["gen_tok_s"] = dec_tokens / dec if dec and dec > 0 else None
    out["gen_tok_s_limit"] = dec_tokens / dec_lim if dec_lim else None
    out["decode_share"] = dec_lim / dec if dec and dec > 0 else None
    out["call_share_machine"] = call_lim / gen
    return out


def _f(x, spec=".1f") -> str:
    return "-" if x is None else format(x, spec)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def machine_table(machine: dict[int, dict]) -> str:
    ts = sorted(machine)
    lines = ["| measure | " + " | ".join(f"{t} thread(s)" for t in ts) + " |", "|---|" + "---|" * len(ts)]
    for key, label, scale, unit in [("gemm_peak", "fp32 GEMM 2048^3", 1e9, "GFLOP/s"),
                                    ("gemm_model", "fp32 model GEMMs, 512 tokens", 1e9, "GFLOP/s"),
                                    ("stream_read", "stream read (sum of 1 GiB)", 1e9, "GB/s"),
                                    ("gemv_read", "batch-1 GEMVs over model-sized weights", 1e9, "GB/s")]:
        lines.append(f"| {label} ({unit}) | " + " | ".join(f"{machine[t][key] / scale:.1f}" for t in ts) + " |")
    return "\n".join(lines)


def limits_table(m: dict, machine: dict[int, dict], context: int, batches: list[int], bpv: int = 4) -> str:
    ts = sorted(machine)
    lines = ["| limit | " + " | ".join(f"{t} core(s)" for t in ts) + " |", "|---|" + "---|" * len(ts)]
    pre = prefill_flops(m, context) / context
    lines.append(f"| prefill, {context}-token prompts (prompt tok/s) | "
                 + " | ".join(f"{machine[t]['gemm_model'] / pre:.0f}" for t in ts) + " |")
    for b in batches:
        row = []
        for t in ts:
            mem, comp = decode_step_terms(m, [context] * b, machine[t]["gemm_model"], machine[t]["gemv_read"], bpv)
            step, bound = max(mem, comp), ("memory" if mem >= comp else "compute")
            row.append(f"{b / step:.0f} ({1000 * step:.0f} ms/step, {bound})")
        lines.append(f"| decode, batch {b}, position {context} (generated tok/s) | " + " | ".join(row) + " |")
    return "\n".join(lines)


def runs_table(rows: list[dict]) -> str:
    head = ("| run | requests | cores | start (s) | prefill (s) | prompt tok/s (limit) | prefill share | "
            "decode (s) | mean batch | gen tok/s (limit) | decode share | call share (machine) | outputs | "
            "load before/after |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        load = f"{r['load_before']:.1f}/{r['load_after']:.1f}"
        if "share" not in r:
            lines.append(f"| {r['run']} | {r.get('n', '-')} | - | - | failed ({r.get('rc')}) | | | | | | | | | {load} |")
            continue
        s = r["share"]
        lines.append(
            f"| {r['run']} | {r['n']} | {s['cores']} | {_f(r['start_s'])} | {_f(r.get('prefill_s'))} | "
            f"{_f(s['prompt_tok_s'], '.0f')} ({_f(s['prompt_tok_s_limit'], '.0f')}) | {_pct(s['prefill_share'])} | "
            f"{_f(s['decode_s'])} | {_f(s['mean_batch'])} | {_f(s['gen_tok_s'])} ({_f(s['gen_tok_s_limit'], '.0f')}) | "
            f"{_pct(s['decode_share'])} | {_pct(s['call_share_machine'])} | {r['outputs_sha']} | {load} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    engines.add_args(ap)
    ap.set_defaults(min_tokens=300, max_context=600, temperature=0.7, top_p=0.95, presence_penalty=0.0,
                    log_dir=str(ROOT / "results" / "bench" / "roofline"))
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="comma-separated VARIANT@N (N prompts)")
    ap.add_argument("--repeat", type=int, default=5, help="repeats of each machine measurement (best kept)")
    ap.add_argument("--context", type=int, default=500, help="position of the limits table's rows")
    ap.add_argument("--batches", default="1,4,8,16,32,64,128")
    ap.add_argument("--machine-only", action="store_true", help="measure the machine and print the limits only")
    ap.add_argument("--json", help="also write everything here")
    args = ap.parse_args(argv)
    runs = []
    for item in (x.strip() for x in args.runs.split(",") if x.strip()):
        name, _, n = item.partition("@")
        if name not in engines.VARIANTS and name not in engines.CONCURRENT:
            ap.error(f"unknown variant {name!r} in --runs")
        runs.append((name, int(n or args.n_prompts)))

    ncpu = os.cpu_count() or 1
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = os.getloadavg()
    m = model_shape(args.model)
    thread_counts = sorted({1, ncpu})
    machine = {t: measure_machine(m, t, args.repeat) for t in thread_counts}
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = "avx512" if " avx512f" in flags else ("avx2" if " avx2" in flags else "?")
    print(f"Roofline, started {started}; {cpu}, {ncpu} CPUs ({isa}), Python {platform.python_version()}, "
          f"torch {torch.__version__}; load {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}")
    print(f"model {args.model}: {m['linear_params'] / 1e6:.1f} M linear params ({m['layer_params'] / 1e6:.1f} M in "
          f"{m['layers']} layers + {m['head_params'] / 1e6:.1f} M LM head{', tied' if m['tied'] else ''}), "
          f"{4 * m['linear_params'] / 1e9:.2f} GB read per fp32 decode step, "
          f"{2 * m['layer_params'] / 1e9:.3f} GFLOP per prefill token + attention, KV "
          f"{4 * m['kv_values_per_token'] / 1024:.0f} KiB per token (fp32)\n")
    results: list[dict] = []
    if args.machine_only or not runs:
        print(machine_table(machine))
        print()
        print(limits_table(m, machine, args.context, [int(b) for b in args.batches.split(",")]))
    if not args.machine_only and runs:
        with tempfile.TemporaryDirectory() as tmp:
            files: dict[int, Path] = {}
            source = ""
            for i, (name, n) in enumerate(runs):
                if n not in files:
                    files[n] = Path(tmp) / f"prompts-{n}.json"
                    args.n_prompts = n
                    source = engines.write_prompts(args, files[n])
                args.n_prompts = n
                res = engines.run_variant(name, i, files[n], args)
                res["run"] = f"{name}@{n}"
                results.append(res)
        # A shared VM's rates wander (a 2-thread GEMM measured 167 and 86 GFLOP/s in two runs an hour
        # apart): measure again after the runs and take the better of the two as the machine's limit.
        first = machine
        again = {t: measure_machine(m, t, args.repeat) for t in thread_counts}
        machine = {t: {k: (max(v, again[t][k]) if isinstance(v, float) else v) for k, v in first[t].items()}
                   for t in thread_counts}
        for res in results:
            if res.get("rc") == 0 and "generate_s" in res:
                res["share"] = shares(res, m, machine, ncpu)
        print("Machine, before the runs:\n")
        print(machine_table(first))
        print("\nMachine, after the runs:\n")
        print(machine_table(again))
        print("\nLimits (the better of the two measurements):\n")
        print(limits_table(m, machine, args.context, [int(b) for b in args.batches.split(",")]))
        print(f"\nEngine runs: prompts of {args.min_tokens}-{args.max_context} context tokens from {source}; "
              f"max_tokens {args.max_tokens}, temperature {args.temperature}, top_p {args.top_p}, "
              f"presence_penalty {args.presence_penalty}\n")
        print(runs_table(results))
    load1 = os.getloadavg()
    print(f"\nload at the end {load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "started": started, "cpu": cpu, "ncpu": ncpu, "isa": isa, "model": m, "machine": machine,
            "machine_first": first if runs and not args.machine_only else machine,
            "load_start": load0, "load_end": load1, "runs": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A trained run evaluated two ways, side by side: its merged model (the pipeline's default) and its
LoRA adapter applied by the base model's vLLM engine (``eval.adapters``, vLLM LoRA serving).

Reads a finished run's folder (``--workdir``: its ``config.yaml``, run manifest, DPO adapter and
merged model), evaluates each variant in its own process with exactly the eval stage's code
(``longmab.stages.evaluate.evaluate``, the config's prompts, sampling, budget and seed), and prints
one markdown table: engine start and generation seconds, the answers identical to the merged
model's, and each benchmark's SubEM.

    .venv/bin/python bench/adapters.py --workdir /tmp/longmab-run-modes/inprocess \
        --variants merged,adapter --json results/bench/adapters.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("merged", "adapter")


def worker(spec: dict) -> None:
    sys.path.insert(0, str(ROOT / "workflow_scripts"))
    import yaml
    from longmab.benchmarks import load_benchmark
    from longmab.config import validate_config
    from longmab.engines import (
        SamplingConfig,
        engine_options,
        lora_engine_args,
        make_engine,
        set_adapter,
    )
    from longmab.prompts import load_templates
    from longmab.runs import deep_merge
    from longmab.stages.evaluate import evaluate

    os.chdir(spec["workdir"])
    raw: dict = {}
    for f in ["config.yaml", *spec["configfiles"]]:  # as Snakemake merges --configfile over config.yaml
        raw = deep_merge(raw, yaml.safe_load(Path(f).read_text()) or {})
    c = validate_config(raw)
    ev = c["eval"]
    benches = {name: load_benchmark(b["path"], b["format"], spec["max_items"] or ev.get("max_samples"))
               for name, b in ev["benchmarks"].items()}
    sampling = SamplingConfig(temperature=ev["temperature"], top_p=1.0, presence_penalty=ev["presence_penalty"],
                              max_tokens=ev["max_tokens"])
    options = engine_options(c, "eval")
    e = c["engine"]
    max_model_len = ev.get("max_model_len") or e["max_model_len"]
    t0 = time.perf_counter()
    if spec["variant"] == "adapter":
        options["vllm"] = {**options["vllm"], **lora_engine_args(spec["adapter"])}
        engine = make_engine("vllm", spec["base"], dtype=e["dtype"], max_model_len=max_model_len, seed=c["seed"],
                             **options)
        set_adapter(engine, spec["adapter"])
    else:
        engine = make_engine("vllm", spec["merged"], dtype=e["dtype"], max_model_len=max_model_len, seed=c["seed"],
                             **options)
    start = time.perf_counter() - t0
    t1 = time.perf_counter()
    preds, metrics = evaluate(benches, engine, load_templates(c["prompts"]), sampling, ev["max_input_len"],
                              c["seed"], max_model_len=max_model_len)
    gen = time.perf_counter() - t1
    engine.close()
    outputs = {name: [r["output"] for r in rows] for name, rows in preds.items()}
    Path(spec["out"]).write_text(json.dumps({"variant": spec["variant"], "start_s": start, "eval_s": gen,
                                             "outputs": outputs,
                                             "subem": {n: m["subem"] for n, m in metrics.items()}}))


def run_variant(spec: dict, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = {**spec, "out": str(Path(tmp) / "out.json")}
        log = Path(tmp) / "log.txt"
        with open(log, "w") as fh:
            proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], stdout=fh,
                                  stderr=subprocess.STDOUT, timeout=timeout, check=False)
        if proc.returncode != 0:
            sys.stderr.write(log.read_text()[-4000:])
            raise SystemExit(f"variant {spec['variant']} failed (exit {proc.returncode})")
        return json.loads(Path(spec["out"]).read_text())


def digest(outputs: dict) -> str:
    return hashlib.sha256(json.dumps(outputs, sort_keys=True).encode()).hexdigest()[:8]


def table(results: list[dict]) -> str:
    ref = next((r for r in results if r["variant"] == "merged"), results[0])
    names = list(ref["subem"])
    lines = ["| variant | start (s) | eval (s) | answers identical to merged | " + " | ".join(
        f"SubEM {n}" for n in names) + " | outputs |",
             "|---" * (5 + len(names)) + "|"]
    for r in results:
        same = sum(a == b for n in names for a, b in zip(r["outputs"][n], ref["outputs"][n]))
        total = sum(len(ref["outputs"][n]) for n in names)
        lines.append(f"| {r['variant']} | {r['start_s']:.1f} | {r['eval_s']:.1f} | {same} / {total} | "
                     + " | ".join(f"{r['subem'][n]:.1f}" for n in names) + f" | {digest(r['outputs'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, help="a finished run's folder")
    ap.add_argument("--configfile", action="append", default=[],
                    help="the run's --configfile over its config.yaml, relative to --workdir (repeatable)")
    ap.add_argument("--run", help="the run (default: the manifest's first)")
    ap.add_argument("--variants", default="merged,adapter", help="comma-separated: merged, adapter (repeats allowed)")
    ap.add_argument("--max-items", type=int, default=0, help="first N items of each benchmark (0 = eval.max_samples)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    if args.workdir is None:
        ap.error("--workdir is required")
    workdir = args.workdir.resolve()
    manifests = sorted((workdir / "results" / "runs").glob("*.json"))
    if not manifests:
        raise SystemExit(f"{workdir}: no run manifest in results/runs/ (run the pipeline first)")
    runs = json.loads(manifests[0].read_text())["runs"]
    run = args.run or next(iter(runs))
    dpo = workdir / runs[run]["dpo"]
    adapter, merged = dpo / "adapter", dpo / "merged"
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    spec = {"workdir": str(workdir), "configfiles": args.configfile, "max_items": args.max_items, "adapter": str(adapter),
            "merged": str(merged), "base": str((workdir / base) if not os.path.isabs(base) else base)}
    results = []
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            ap.error(f"unknown variant {variant!r} (expected {', '.join(VARIANTS)})")
        results.append(run_variant({**spec, "variant": variant}, args.timeout))
        print(f"# {variant}: start {results[-1]['start_s']:.1f} s, eval {results[-1]['eval_s']:.1f} s", flush=True)
    print(f"# {workdir}, run {run}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

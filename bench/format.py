"""Does the policy answer in the format the metrics read? The format levers of issue #19, side by side.

For each variant (a model folder, optionally first given a format warm-up with the settings named),
the script answers every item of the embedded evaluation sets with the default answer template,
greedy, as the `eval` rule does, and reports per variant: the share of answers with an answer line
(``answer:`` / ``the answer is``: the metrics read nothing without one), SubEM with a 95 % bootstrap
interval over items, SubEM on 1-hop and on multi-hop items, generated tokens per answer, and the
probe keep rate on the training data (probe template with the gold answer, the probe's sampling).

    .venv/bin/python bench/format.py --model results/models/policy \\
        --variants raw,warm:'{"examples":48,"epochs":1,"learning_rate":1e-4,"passages":[2,4]}' \\
        --json results/bench/format.json

A variant is ``raw`` (the model as given) or ``NAME:JSON`` (a warm-up with those
``models.warmup`` settings, trained first into ``--work-dir``; ``NAME`` labels the row).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path
from statistics import mean

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow_scripts"))


def bootstrap(values: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    n = len(values)
    if n < 2:
        return (float("nan"), float("nan"))
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def gold_of(row: dict) -> list[str]:
    g = row.get("answers", row.get("answer"))
    return g if isinstance(g, list) else [g]


def measure(model: str, args, data: dict, train_rows: list[dict]) -> dict:
    from longmab.engines import SamplingConfig, make_engine
    from longmab.metrics import extract_answer, probe_matches, score_prediction
    from longmab.prompts import load_templates, render_answer, render_probe

    templates = load_templates()
    items = [(name, r) for name, rows in data.items() for r in rows]
    engine = make_engine(args.backend, model, dtype=args.dtype, max_model_len=4096, seed=args.seed)
    try:
        t0 = time.perf_counter()
        outs = engine.generate([render_answer(templates, r["context"], r["input"]) for _, r in items],
                               SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=args.max_tokens),
                               [args.seed] * len(items))
        seconds = time.perf_counter() - t0
        probes = engine.generate([render_probe(templates, r["context"], r["input"], r["answer"]) for r in train_rows],
                                 SamplingConfig(temperature=args.probe_temperature, top_p=0.95,
                                                max_tokens=args.max_tokens),
                                 [args.seed + i for i in range(len(train_rows))])
        gen_tokens = [engine.count_tokens(o) for o in outs]
    finally:
        engine.close()
    marker = [extract_answer(o) is not None for o in outs]
    subem = [score_prediction(o, gold_of(r))["subem"] for o, (_, r) in zip(outs, items)]
    hops = [len(r.get("evidence") or []) for _, r in items]
    lo, hi = bootstrap(subem, seed=args.seed)
    kept = [probe_matches(o, [r["answer"]], "char", template=templates["probe"]) for o, r in zip(probes, train_rows)]
    per_set = {name: mean(s for s, (n, _) in zip(subem, items) if n == name) for name in data}
    return {"items": len(items), "marker_rate": mean(marker), "subem": mean(subem), "subem_lo": lo, "subem_hi": hi,
            "subem_1hop": mean([s for s, h in zip(subem, hops) if h <= 1] or [0.0]),
            "subem_multihop": mean([s for s, h in zip(subem, hops) if h > 1] or [0.0]),
            "tokens_per_answer": mean(gen_tokens), "answer_seconds": round(seconds, 1),
            "probes_kept": sum(kept), "probes": len(train_rows), "per_set": per_set,
            "example": outs[0][:300]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the raw policy folder (e.g. results/models/policy)")
    ap.add_argument("--variants", default="raw", help="comma-separated: raw | NAME:JSON (warm-up settings)")
    ap.add_argument("--data-dir", default=str(REPO / "data"))
    ap.add_argument("--limit", type=int, default=0, help="items per evaluation set and training probes (0: all)")
    ap.add_argument("--backend", default="vllm")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--probe-temperature", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--work-dir", default=str(REPO / "results" / "bench" / "format"))
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from longmab.io import read_jsonl
    from longmab.synth import TEST_SETS
    from longmab.warmup import WarmupSettings, train_warmup

    data_dir = Path(args.data_dir)
    data = {}
    for name in TEST_SETS:
        rows = read_jsonl(data_dir / "test" / f"{name}.jsonl")
        data[name] = rows[: args.limit] if args.limit else rows
    train_rows = read_jsonl(data_dir / "train.jsonl")
    train_rows = train_rows[: args.limit] if args.limit else train_rows

    results = []
    for spec in _split_specs(args.variants):
        name, _, settings = spec.partition(":")
        model, warm = args.model, None
        if settings:
            s = WarmupSettings.from_dict(json.loads(settings), seed=args.seed)
            model = str(Path(args.work_dir) / name)
            warm = train_warmup(args.model, model, s)
        row = {"variant": name, **measure(model, args, data, train_rows)}
        if warm:
            row.update({"warmup_seconds": warm["seconds"], "warmup_steps": warm["steps"],
                        "warmup_final_loss": warm["loss"][-1]["loss"]})
        results.append(row)
    print("\n| variant | items | answer line | SubEM [95 % CI] | SubEM 1-hop | SubEM multi-hop | tokens / answer "
          "| probes kept | warm-up s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['variant']} | {r['items']} | {r['marker_rate']:.2f} | {r['subem']:.2f} "
              f"[{r['subem_lo']:.2f}, {r['subem_hi']:.2f}] | {r['subem_1hop']:.2f} | {r['subem_multihop']:.2f} "
              f"| {r['tokens_per_answer']:.0f} | {r['probes_kept']}/{r['probes']} | {r.get('warmup_seconds', '–')} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1) + "\n")
    return 0


def _split_specs(text: str) -> list[str]:
    """Split ``raw,a:{...},b:{...}`` at the commas outside braces."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur] if cur else out


if __name__ == "__main__":
    sys.exit(main())

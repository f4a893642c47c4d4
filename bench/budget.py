"""Where a run's time and tokens go, per stage: the token budget of `make run` (issue #19).

Reads what a finished run left in a workflow folder: Snakemake's per-job benchmark files
(``results/benchmarks/**.tsv``: wall seconds) and the job logs (``results/logs/**.log``: every
``vllm generate`` / ``stream generate`` line's prompt and generated tokens, and the engine starts),
and prints one row per stage: jobs, summed and longest job seconds, engine starts, prompt tokens,
generated tokens, and the share of the prompt tokens.

    .venv/bin/python bench/budget.py --workdir . --json results/bench/budget.json
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

GEN_RE = re.compile(r"(?:vllm|transformers)(?: stream)? generate: (\d+) prompts, (\d+) prompt tokens, "
                    r"(\d+) generated tokens")
START_RE = re.compile(r"engine for .* (?:started|loaded) in ([\d.]+) s")
STAGE_ORDER = ("embedded_policy", "embedded_warmup", "data", "probe", "embed", "rollout", "sealong", "mbr",
               "pairs", "dpo_train", "dpo_export", "eval", "tables", "plots")


def stage_of(rel: Path) -> str:
    """The stage of a benchmark / log file from its path under results/benchmarks or results/logs."""
    parts = rel.parts
    if len(parts) == 1:
        return rel.stem.split(".")[0]
    top = parts[0]
    if top == "dpo":
        return "dpo_export" if ".export" in rel.name else "dpo_train"
    return top


def collect(workdir: Path) -> dict[str, dict]:
    stages: dict[str, dict] = {}

    def row(stage: str) -> dict:
        return stages.setdefault(stage, {"jobs": 0, "seconds": 0.0, "longest": 0.0, "engine_starts": 0,
                                         "engine_start_s": 0.0, "requests": 0, "prompt_tokens": 0,
                                         "generated_tokens": 0})

    for tsv in sorted((workdir / "results" / "benchmarks").rglob("*.tsv")):
        with open(tsv, encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if not rows:
            continue
        s = float(rows[-1]["s"])
        r = row(stage_of(tsv.relative_to(workdir / "results" / "benchmarks")))
        r["jobs"] += 1
        r["seconds"] += s
        r["longest"] = max(r["longest"], s)
    for log in sorted((workdir / "results" / "logs").rglob("*.log")):
        rel = log.relative_to(workdir / "results" / "logs")
        if rel.parts[0] in ("runs", "plots") or rel.name.endswith(".llamafactory.log"):
            continue
        text = log.read_text(encoding="utf-8", errors="replace")
        gens = GEN_RE.findall(text)
        starts = START_RE.findall(text)
        if not gens and not starts:
            continue
        r = row(stage_of(rel))
        for n, p, g in gens:
            r["requests"] += int(n)
            r["prompt_tokens"] += int(p)
            r["generated_tokens"] += int(g)
        r["engine_starts"] += len(starts)
        r["engine_start_s"] += sum(float(x) for x in starts)
    return dict(sorted(stages.items(), key=lambda kv: (STAGE_ORDER.index(kv[0]) if kv[0] in STAGE_ORDER
                                                       else len(STAGE_ORDER), kv[0])))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=".", help="the workflow folder of a finished run")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    stages = collect(Path(args.workdir))
    if not stages:
        print(f"no benchmark files or job logs under {args.workdir}/results", file=sys.stderr)
        return 1
    total_prompt = sum(r["prompt_tokens"] for r in stages.values()) or 1
    print("| stage | jobs | job s (sum) | longest job s | engine starts (s) | requests | prompt tokens | "
          "generated tokens | share of prompt tokens |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in stages.items():
        print(f"| {name} | {r['jobs']} | {r['seconds']:.0f} | {r['longest']:.0f} | "
              f"{r['engine_starts']} ({r['engine_start_s']:.0f}) | {r['requests']} | {r['prompt_tokens']} | "
              f"{r['generated_tokens']} | {r['prompt_tokens'] / total_prompt:.0%} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(stages, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

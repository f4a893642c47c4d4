"""How many preference pairs would fewer rollout rounds give? Read off a finished rollout, exactly.

A UCB rollout of R rounds is the first R rounds of the same rollout with more rounds (each round's
choice depends only on the rounds before it, and every round has its own seed), so the pairs of
every R <= the rounds run follow from one rollout without generating again: a sample yields a pair
when the strict rewards of its first R responses are not all equal (`longmab.pairs.select_pair`).

    .venv/bin/python bench/pairs_vs_rounds.py --rollout 'results/rollout/ucb-r8-k2-*/0*.jsonl' \\
        --samples-in 64 --json results/bench/pairs_vs_rounds.json

Prints one row per R: pairs, pairs per rolled-out and per training sample, mean chosen and rejected
strict reward, generations (R x samples: the rollout's cost is linear in it).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path
from statistics import mean

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow_scripts"))


def pairs_by_rounds(rows: list[dict], subem: str = "char") -> list[dict]:
    from longmab.metrics import strict_reward

    scored = [[strict_reward(r["response"], row["answer"], subem) for r in row.get("rounds", [])] for row in rows]
    max_r = max((len(s) for s in scored), default=0)
    out = []
    for rounds in range(1, max_r + 1):
        chosen, rejected = [], []
        for s in scored:
            head = s[:rounds]
            if head and max(head) != min(head):
                chosen.append(max(head))
                rejected.append(min(head))
        out.append({"rounds": rounds, "pairs": len(chosen), "generations": sum(min(len(s), rounds) for s in scored),
                    "chosen": mean(chosen) if chosen else None, "rejected": mean(rejected) if rejected else None})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rollout", required=True, help="glob of the rollout shard files (quote it)")
    ap.add_argument("--samples-in", type=int, default=0, help="training samples before the probe filter")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    from longmab.io import read_jsonl

    paths = sorted(glob.glob(args.rollout))
    rows = [r for p in paths for r in read_jsonl(p)]
    if not rows:
        print(f"no rollout rows in {args.rollout}", file=sys.stderr)
        return 1
    table = pairs_by_rounds(rows)
    n_in = args.samples_in or len(rows)
    print(f"{len(rows)} rolled-out samples from {len(paths)} file(s); {n_in} training samples\n")
    print("| rounds | pairs | pairs / rolled-out sample | pairs / training sample | chosen | rejected | generations |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in table:
        r["per_rolled_out"] = r["pairs"] / len(rows)
        r["per_training_sample"] = r["pairs"] / n_in
        fmt = (lambda v: "–" if v is None else f"{v:.2f}")
        print(f"| {r['rounds']} | {r['pairs']} | {r['per_rolled_out']:.2f} | {r['per_training_sample']:.2f} | "
              f"{fmt(r['chosen'])} | {fmt(r['rejected'])} | {r['generations']} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"files": paths, "samples_in": n_in, "table": table}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

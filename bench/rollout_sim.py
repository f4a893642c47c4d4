"""Predict the asynchronous rollout's gain at paper scale by replaying recorded response lengths.

Model (decode steps of a continuous-batching engine such as vLLM, one request in flight per sample,
batch capacity >= samples): a response of L tokens occupies L decode steps.

- sync: round r takes ``max_i L[i][r]`` steps (the shard waits for its longest response);
- async: sample i's responses run back to back, so the shard takes ``max_i sum_r L[i][r]`` steps.

Both generate the same tokens T = sum of all L. With a step cost ``c0 + c1 * batch`` the run costs
``c0 * steps + c1 * T``, so the speed-up is ``(c0*S_sync + c1*T) / (c0*S_async + c1*T)``:
``c1 = 0`` is the memory-bound limit (the step ratio), a large ``c1/c0`` (compute-bound, a CPU)
shrinks the gain. Prefill is the same work in both schedules and is left out.

    .venv/bin/python bench/rollout_sim.py --json results/bench/rollout-async.json
    .venv/bin/python bench/rollout_sim.py --json results/bench/rollout-async.json --samples 50 --rounds 30 \\
        --max-tokens 1024 --trials 200

Lengths come from the sync run of bench/rollout_async.py's JSON (re-tokenized responses). A
simulated sample replays one recorded sample's lengths, drawn with replacement round by round
(``per-sample``: keeps how a sample's lengths go together) or draws every length from all recorded
lengths (``pooled``); ``x2`` multiplies the lengths by 2 before the cap (a policy that writes twice
as long, as the paper's 7-8 B models at up to 1024 tokens may). Cost models: ``memory-bound``
(c1 = 0); ``cpu-fit`` (c0, c1 fitted on the measured decode steps); ``gpu-est`` (c1/c0 from
``--gpu-c1-over-c0``, default 0.05: per step an 8 B model reads ~16 GB of weights and ~128 KB of
KV cache per context token and sequence, ~6.5 K tokens per rollout prompt -> 0.8 GB per sequence,
so one more sequence costs ~5 % of a step).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _batches(lengths: np.ndarray) -> np.ndarray:
    """Requests in flight at each step when every row's requests start together: ``#(L > s)``."""
    lengths = np.sort(np.asarray(lengths, dtype=np.int64))
    steps = np.arange(int(lengths.max()) if lengths.size else 0)
    return lengths.size - np.searchsorted(lengths, steps, side="right")


def schedule_batches(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batch size at every decode step, (sync, async), for a (samples, rounds) matrix of lengths."""
    lengths = np.asarray(lengths, dtype=np.int64)
    sync = np.concatenate([_batches(lengths[:, r]) for r in range(lengths.shape[1])])
    return sync, _batches(lengths.sum(axis=1))


def cost(batches: np.ndarray, c0: float, c1: float) -> float:
    """Run time for step cost ``c0 + c1 * batch``."""
    return float(c0 * batches.size + c1 * batches.sum())


def occupancy(batches: np.ndarray, samples: int, c0: float, c1: float) -> float:
    """Time-weighted mean batch / samples (c1 = 0: per step)."""
    t = c0 + c1 * batches
    return float((batches * t).sum() / (t.sum() * samples))


def fit_step_cost(step_logs) -> dict | None:
    """Step cost ``c0 + c1 * batch`` (seconds) from step logs (``[seconds, in_flight, prefill]`` rows of
    bench/rollout_async.py): a least-squares line through the median decode-step time of each batch
    size seen in >= 10 decode steps (medians: the shared machine's load spikes do not drag the fit)."""
    by = {}
    for log in step_logs:
        for dt, n, pre in log:
            if not pre and n > 0:
                by.setdefault(int(n), []).append(dt)
    pts = [(n, float(np.median(v)), len(v)) for n, v in sorted(by.items()) if len(v) >= 10]
    if len(pts) < 2:
        return None
    c1, c0 = np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)
    return {"c0": float(c0), "c1": float(c1), "steps": sum(p[2] for p in pts), "points": pts}


def draw(recorded: list[list[int]], samples: int, rounds: int, max_tokens: int, scale: float, pooled: bool,
         rng: np.random.Generator) -> np.ndarray:
    """A (samples, rounds) matrix of lengths bootstrapped from ``recorded`` (see the docstring)."""
    if pooled:
        pool = np.array([x for row in recorded for x in row])
        out = rng.choice(pool, size=(samples, rounds))
    else:
        picks = rng.integers(len(recorded), size=samples)
        out = np.array([rng.choice(np.array(recorded[p]), size=rounds) for p in picks])
    return np.clip(np.rint(out * scale), 1, max_tokens).astype(np.int64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True, help="bench/rollout_async.py --json output")
    ap.add_argument("--samples", type=int, default=50, help="samples per engine (paper: 50)")
    ap.add_argument("--rounds", type=int, default=30, help="paper: 30")
    ap.add_argument("--max-tokens", type=int, default=1024, help="paper: 1024")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gpu-c1-over-c0", type=float, default=0.05)
    args = ap.parse_args(argv)

    rec = json.loads(Path(args.json).read_text())
    sync_runs = [r for r in rec["runs"] if r["mode"] == "sync"]
    async_runs = [r for r in rec["runs"] if r["mode"] == "async"]
    recorded = sync_runs[0]["lengths"]
    recorded = [row for row in recorded if row]
    fit = fit_step_cost([r["step_log"] for r in rec["runs"] if r.get("step_log")])
    flat = [x for row in recorded for x in row]
    print(f"recorded: {args.json}, {len(recorded)} samples x {len(recorded[0])} rounds, max_tokens "
          f"{rec['sampling']['max_tokens']}; lengths mean {np.mean(flat):.0f}, median {np.median(flat):.0f}, "
          f"min {min(flat)}, max {max(flat)}, at the cap {np.mean(np.array(flat) >= rec['sampling']['max_tokens'] - 1):.0%}")
    models = {"memory-bound": (1.0, 0.0), "gpu-est": (1.0, args.gpu_c1_over_c0)}
    if fit:
        models["cpu-fit"] = (fit["c0"], fit["c1"])
        print(f"cpu-fit: step = {1000 * fit['c0']:.1f} ms + {1000 * fit['c1']:.1f} ms x batch (line through the "
              f"median step time per batch size, {fit['steps']} decode steps of the recorded runs: " +
              ", ".join(f"{n}: {1000 * m:.0f} ms" for n, m, _ in fit["points"]) + ")")

    # 1. the measured run replayed exactly: does the model predict what was measured?
    cap = rec["sampling"]["max_tokens"]
    bs, ba = schedule_batches(np.clip(np.array(recorded), 1, cap))
    print("\nCheck: the measured run replayed exactly (occupancy time-weighted with cpu-fit, as measured)")
    print("| | sync steps | async steps | step ratio | occupancy sync / async | speed-up |")
    print("|---|---|---|---|---|---|")
    n = len(recorded)
    c = models.get("cpu-fit", (1.0, 0.0))
    print(f"| predicted (cpu-fit) | {bs.size} | {ba.size} | {bs.size / ba.size:.2f} | {occupancy(bs, n, *c):.2f} / "
          f"{occupancy(ba, n, *c):.2f} | {cost(bs, *c) / cost(ba, *c):.2f}x |")
    if async_runs and sync_runs[0].get("steps") and async_runs[0].get("steps"):
        ms, ma = sync_runs[0]["steps"], async_runs[0]["steps"]
        walls = sum(r["wall_s"] for r in sync_runs) / len(sync_runs), sum(r["wall_s"] for r in async_runs) / len(async_runs)
        print(f"| measured | {ms} | {ma} | {ms / ma:.2f} | {sync_runs[0]['occupancy']:.2f} / "
              f"{async_runs[0]['occupancy']:.2f} | {walls[0] / walls[1]:.2f}x (wall) |")

    # 2. paper scale
    rng = np.random.default_rng(args.seed)
    print(f"\nPaper scale: {args.samples} samples x {args.rounds} rounds, max_tokens {args.max_tokens}, "
          f"{args.trials} bootstrap trials (mean, [5 %, 95 %])")
    head = "| lengths | mean length | sync steps | async steps | occupancy per step sync / async | " + " | ".join(
        f"speed-up {m}" for m in models) + " |"
    print(head)
    print("|" + "---|" * (5 + len(models)))
    for pooled in (False, True):
        for scale in (1.0, 2.0):
            res = []
            for _ in range(args.trials):
                lens = draw(recorded, args.samples, args.rounds, args.max_tokens, scale, pooled, rng)
                bs, ba = schedule_batches(lens)
                res.append((lens.mean(), bs.size, ba.size, occupancy(bs, args.samples, 1, 0),
                            occupancy(ba, args.samples, 1, 0),
                            *[cost(bs, c0, c1) / cost(ba, c0, c1) for c0, c1 in models.values()]))
            a = np.array(res)
            def q(k, a=a):
                return f"{a[:, k].mean():.2f} [{np.quantile(a[:, k], 0.05):.2f}, {np.quantile(a[:, k], 0.95):.2f}]"

            name = ("pooled" if pooled else "per-sample") + (" x2" if scale != 1 else "")
            print(f"| {name} | {a[:, 0].mean():.0f} | {a[:, 1].mean():.0f} | {a[:, 2].mean():.0f} | "
                  f"{a[:, 3].mean():.2f} / {a[:, 4].mean():.2f} | " + " | ".join(q(5 + k) for k in range(len(models))) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

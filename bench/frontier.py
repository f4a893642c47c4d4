"""Pairs vs minutes: the embedded preference-data pipeline at several sizes and engines, one run.

Each point is ``BACKEND:N`` (``transformers`` or ``vllm``; ``N`` training samples, a prefix of one
seeded synthetic set: ``longmab synth --seed 42 --n-train <largest N>``, whose first 24 samples are
``data/train.jsonl``). A point runs the real workflow's ``preference_data`` target (data -> probe ->
embed -> rollout -> pairs, Snakemake, ``--cores`` jobs side by side) in a fresh copy of this
checkout, so nothing is shared between points except the built embedded policy (copied in when
``results/models/policy`` exists, to leave its ~30 s build out of every point; say so when you quote
the figures). Prints one row per point: wall time, samples, probes kept, pairs, ties, generations,
pairs per minute, and the critical path (the longest probe and rollout job).

    .venv/bin/python bench/frontier.py --points transformers:24,transformers:48,vllm:48,vllm:96

Every other setting is ``config.yaml``'s (plus ``--set key=value`` overrides, YAML values, dotted
keys); the rest of the pipeline (DPO, merge, evaluation of base and trained) is not in these
figures: add the fixed cost measured by ``make run`` (README, "Measured").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def tracked_files(root: Path) -> list[str]:
    """The checkout's files as git sees them (tracked and untracked-not-ignored)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    return [f for f in out.splitlines() if (root / f).is_file()]


def copy_checkout(dest: Path) -> None:
    for rel in tracked_files(ROOT):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


def set_key(cfg: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def job_seconds(work: Path, stage: str) -> list[float]:
    """Wall seconds of each job of a stage (its Snakemake benchmark files)."""
    out = []
    for tsv in sorted((work / "results" / "benchmarks").glob(f"{stage}/**/*.tsv")):
        lines = tsv.read_text().splitlines()
        if len(lines) > 1:
            out.append(float(lines[1].split("\t")[0]))
    return out


def run_point(backend: str, n: int, args, data: Path) -> dict:
    work = Path(args.work_dir) / f"{backend}-{n}"
    if work.exists():
        shutil.rmtree(work)
    copy_checkout(work)
    policy = ROOT / "results" / "models" / "policy"
    if policy.is_dir() and not args.build_policy:
        shutil.copytree(policy, work / "results" / "models" / "policy")
    overlay: dict = {"data": {"train": str(data), "max_samples": n}, "engine": {"backend": backend}}
    for item in args.set or []:
        key, _, value = item.partition("=")
        set_key(overlay, key, yaml.safe_load(value))
    (work / "frontier.yaml").write_text(yaml.safe_dump(overlay), encoding="utf-8")
    cmd = [str(Path(sys.executable).with_name("snakemake")), "--cores", str(args.cores), "preference_data",
           "--configfile", "frontier.yaml"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(work / "frontier.log", "w") as log:
        rc = subprocess.run(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    row = {"point": f"{backend}:{n}", "rc": rc, "wall_s": wall, "load_before": load0,
           "load_after": os.getloadavg()[0]}
    if rc != 0:
        print(f"# {row['point']}: failed (rc {rc}), see {work / 'frontier.log'}", file=sys.stderr, flush=True)
        return row
    [stats_path] = list((work / "results" / "pairs").glob("*/stats.json"))
    st = read_json(stats_path)
    roll = [read_json(p) for p in (work / "results" / "rollout").glob("*/*.stats.json")]

    row.update({
        "samples": st.get("samples_in"), "probes_kept": st.get("probes_kept"), "pairs": st.get("pairs"),
        "ties": st.get("ties_skipped"), "generations": st.get("generations"),
        "probe_job_s": max(job_seconds(work, "probe"), default=None),
        "rollout_job_s": max(job_seconds(work, "rollout"), default=None),
        "occupancy": [round(r.get("occupancy", 0), 2) for r in roll],
        "mean_gap": (st["mean_chosen_reward"] - st["mean_rejected_reward"]) if st.get("pairs") else None,
    })
    print(f"# {row['point']}: {json.dumps(row)}", file=sys.stderr, flush=True)
    return row


def _f(x, spec=".1f") -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[dict]) -> str:
    lines = ["| point | wall (min) | samples | probes kept | pairs | ties | generations | pairs / min | "
             "longest probe job (s) | longest rollout job (s) | rollout occupancy | reward gap | load before/after |",
             "|" + "---|" * 13]
    for r in rows:
        load = f"{r['load_before']:.1f}/{r['load_after']:.1f}"
        if r["rc"] != 0:
            lines.append(f"| {r['point']} | failed (rc {r['rc']}) | | | | | | | | | | | {load} |")
            continue
        ppm = r["pairs"] / (r["wall_s"] / 60) if r.get("pairs") is not None else None
        lines.append(
            f"| {r['point']} | {r['wall_s'] / 60:.1f} | {r['samples']} | {r['probes_kept']} | {r['pairs']} | "
            f"{r['ties']} | {r['generations']} | {_f(ppm, '.2f')} | {_f(r['probe_job_s'], '.0f')} | "
            f"{_f(r['rollout_job_s'], '.0f')} | {' / '.join(map(str, r['occupancy']))} | "
            f"{_f(r['mean_gap'], '.2f')} | {load} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", default="transformers:24,transformers:48,vllm:48,vllm:96")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--work-dir", default="/tmp/longmab-frontier")
    ap.add_argument("--set", action="append", help="config override KEY=VALUE (dotted key, YAML value)")
    ap.add_argument("--build-policy", action="store_true", help="build the embedded policy in every point")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    points = []
    for item in args.points.split(","):
        backend, _, n = item.strip().partition(":")
        if backend not in ("transformers", "vllm") or not n.isdigit():
            ap.error(f"bad point {item!r} (BACKEND:N)")
        points.append((backend, int(n)))
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    n_max = max(n for _, n in points)
    data_dir = work / f"synth-{n_max}"
    subprocess.run([str(Path(sys.executable).with_name("longmab")), "synth", "--out-dir", str(data_dir),
                    "--seed", "42", "--n-train", str(n_max)], check=True, capture_output=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = [run_point(b, n, args, data_dir / "train.jsonl") for b, n in points]
    print(f"Frontier, started {started}; {os.cpu_count()} CPUs, --cores {args.cores}; preference_data of "
          f"config.yaml with data.train = synth --seed 42 --n-train {n_max} (first N samples)"
          + (f", overrides {args.set}" if args.set else "") + "\n")
    print(table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

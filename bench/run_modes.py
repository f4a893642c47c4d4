"""The same pipeline at several commits and engine modes, side by side in one run (issue #22).

Each side is ``NAME=COMMIT`` or ``NAME=COMMIT:KEY=VALUE[;KEY=VALUE]`` (Snakemake ``--config``
overrides, e.g. ``"server=HEAD:engine={mode: server}"``). A side runs ``snakemake --cores N`` (what
``make run`` runs, without its HTML report) in a fresh clone of this repository at COMMIT, with this
checkout's ``.venv`` and the clone's own library first on ``PYTHONPATH`` (so the clone's code runs,
not the editable install's), one side after the other on the same machine.

    .venv/bin/python bench/run_modes.py --side before=f2077e4 --side inprocess=HEAD \\
        --side "server=HEAD:engine={mode: server}" --json results/bench/run-modes.json

Prints one row per side: wall time, jobs, engine starts (vLLM / transformers engines constructed,
counted in the job and server logs) and their seconds, the job seconds of the generating rules
(probe, rollout, sealong, eval; Snakemake's benchmark files), and each side's wall time as a ratio
of the first side's. ``--until RULE`` stops every side after that rule (the tests run it on
``data``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATING = ("probe", "rollout", "sealong", "eval")
START = re.compile(r"(?:vLLM engine for .* started|transformers engine for .* loaded) in ([0-9.]+) s")
CONNECT = re.compile(r"engine server \S+ \(pid \d+, .*\): connected in")


def parse_side(text: str) -> tuple[str, str, list[str]]:
    name, _, rest = text.partition("=")
    commit, _, overrides = rest.partition(":")
    if not name or not commit:
        raise SystemExit(f"--side {text!r}: expected NAME=COMMIT[:KEY=VALUE;...]")
    return name, commit, [o for o in overrides.split(";") if o]


def engine_starts(workdir: Path) -> tuple[int, float, int]:
    """(engine starts, their seconds, jobs that connected to a running server) in a finished run."""
    logs = list((workdir / "results" / "logs").rglob("*.log"))
    logs += list((workdir / ".snakemake" / "longmab-engines").glob("*.log"))
    n, secs, connects = 0, 0.0, 0
    for p in logs:
        text = p.read_text(encoding="utf-8", errors="replace")
        for m in START.finditer(text):
            n += 1
            secs += float(m.group(1))
        connects += len(CONNECT.findall(text))
    return n, secs, connects


def job_seconds(workdir: Path) -> dict[str, float]:
    """Rule -> summed wall seconds of its jobs (Snakemake's benchmark files)."""
    out: dict[str, float] = {}
    bench = workdir / "results" / "benchmarks"
    for f in bench.rglob("*.tsv"):
        rule = f.relative_to(bench).parts[0]
        with open(f, encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        out[rule] = out.get(rule, 0.0) + sum(float(r["s"]) for r in rows if r.get("s"))
    return out


def run_side(name: str, commit: str, overrides: list[str], args) -> dict:
    work = Path(args.work) / name
    if work.exists():
        shutil.rmtree(work)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=work, check=True)
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=work, check=True, capture_output=True,
                         text=True).stdout.strip()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(work / "workflow_scripts"), env.get("PYTHONPATH")]))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--cores", str(args.cores)]
    if overrides:
        cmd += ["--config", *overrides]
    if args.until:
        cmd += ["--until", args.until]
    print(f"# {name}: {sha} {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"side {name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    jobs = len(re.findall(r"^rule \w+:", proc.stderr, flags=re.M)) + len(re.findall(r"^localrule \w+:", proc.stderr,
                                                                                      flags=re.M))
    starts, start_s, connects = engine_starts(work)
    per_rule = job_seconds(work)
    return {"side": name, "commit": sha, "config": overrides, "wall_s": wall, "jobs": jobs,
            "engine_starts": starts, "engine_start_s": start_s, "server_connects": connects,
            "generating_job_s": {r: per_rule.get(r, 0.0) for r in GENERATING}, "job_s": per_rule}


def table(rows: list[dict]) -> str:
    base = rows[0]["wall_s"]
    head = ("| side | commit | config | wall (min) | vs first | jobs | engine starts | start s | connects | "
            + " | ".join(f"{r} job s" for r in GENERATING) + " |")
    lines = [head, "|" + "---|" * (9 + len(GENERATING))]
    for r in rows:
        gen = " | ".join(f"{r['generating_job_s'][g]:.0f}" for g in GENERATING)
        lines.append(f"| {r['side']} | {r['commit']} | {' '.join(r['config']) or '-'} | {r['wall_s'] / 60:.1f} | "
                     f"{r['wall_s'] / base:.2f} | {r['jobs']} | {r['engine_starts']} | {r['engine_start_s']:.0f} | "
                     f"{r['server_connects']} | {gen} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", action="append", required=True, help="NAME=COMMIT[:KEY=VALUE;...] (repeat)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--until", help="stop every side after this rule")
    ap.add_argument("--work", default="/tmp/longmab-run-modes")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    rows = [run_side(*parse_side(s), args) for s in args.side]
    print(table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

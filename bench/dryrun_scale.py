"""How long does `snakemake -n` take to plan the paper's scale (5,000 samples in 100 shards)?

Copies the workflow into a temp dir, writes a 5,000-line dummy training file and dummy benchmark
files at the paths of configs/paper-llama3.yaml, and times full dry runs (DAG of ~310 jobs):

    .venv/bin/python bench/dryrun_scale.py [--repeat 3] [--config configs/paper-llama3.yaml]

Prints one line per run and a summary with the machine's load average (shared machines vary).
Target: under 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from longmab.plan import copy_workflow, write_placeholder_inputs

REPO = Path(__file__).resolve().parents[1]


def write_inputs(dest: Path, config: dict, n: int) -> None:
    train = dest / config["data"]["train"]
    train.parent.mkdir(parents=True, exist_ok=True)
    context = "Passage 1:\n" + "A sentence of filler text. " * 40
    with open(train, "w", encoding="utf-8") as fh:
        fh.writelines(
            json.dumps({"id": str(i), "input": f"question {i}?", "answer": "x", "context": context}) + "\n"
            for i in range(n)
        )
    write_placeholder_inputs(dest, config)  # the benchmark files, one row in each one's format


def total_jobs(output: str) -> int:
    m = re.search(r"^total\s+(\d+)$", output, re.MULTILINE)
    return int(m.group(1)) if m else -1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/paper-llama3.yaml")
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    snakemake = Path(sys.executable).parent / "snakemake"
    config = yaml.safe_load((REPO / args.config).read_text())
    times = []
    with tempfile.TemporaryDirectory(prefix="dryrun-scale-") as tmp:
        work = Path(tmp)
        copy_workflow(REPO, work)
        write_inputs(work, config, args.samples)
        cmd = [str(snakemake), "-n", "--cores", "1", "--configfile", args.config, "--replace-workflow-config"]
        print(f"workdir {work}: {args.samples} samples, {config['data']['shards']} shards; {' '.join(cmd[1:])}")
        for i in range(args.repeat):
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
            elapsed = time.perf_counter() - start
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                return 1
            times.append(elapsed)
            print(f"run {i + 1}: {elapsed:.2f} s, {total_jobs(proc.stdout + proc.stderr)} jobs planned")
    load = os.getloadavg()
    print(
        f"dry run at paper scale: min {min(times):.2f} s, median {statistics.median(times):.2f} s "
        f"over {len(times)} runs (target < 10 s); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

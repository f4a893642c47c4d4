"""Helpers for tests that read what `snakemake -n` plans to do."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

STATS_ROW = re.compile(r"^(\S+)\s+(\d+)$")


def job_counts(output: str) -> dict[str, int]:
    """Rule -> planned job count from the "Job stats:" table of a dry run ({} = nothing to do).

    The rule ``all`` and the ``total`` row are left out.
    """
    counts: dict[str, int] = {}
    lines = output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    except StopIteration:
        return counts
    for line in lines[start + 3 :]:  # header, dashes
        m = STATS_ROW.match(line.strip())
        if not m:
            break
        rule, n = m.group(1), int(m.group(2))
        if rule == "total":
            break
        if rule != "all":
            counts[rule] = counts.get(rule, 0) + n
    return counts


def dry_run_counts(proc) -> dict[str, int]:
    """Job counts of a finished dry run, whose stdout and stderr may both carry the table."""
    return job_counts(proc.stdout) or job_counts(proc.stderr)


#: One row per benchmark format (the config checks read the first row of every benchmark file).
DUMMY_ROWS = {
    "longbench": {"input": "q?", "context": "c.", "answers": ["a"], "_id": "0"},
    "infinitebench": {"id": "0", "input": "q?", "context": "c.", "answer": ["a"]},
}


def write_dummy_inputs(workdir: Path, config_path: Path, n_train: int | None = None) -> dict:
    """Create the raw training file and benchmark files a config names (dry runs only need them to
    exist; the config checks want at least one sample per shard: ``n_train`` defaults to
    ``data.shards``). Returns the parsed config."""
    config = yaml.safe_load(config_path.read_text())
    if n_train is None:
        n_train = int(config["data"].get("shards", 1))
    train = workdir / config["data"]["train"]
    train.parent.mkdir(parents=True, exist_ok=True)
    with open(train, "w", encoding="utf-8") as fh:
        fh.writelines(
            json.dumps({"id": str(i), "input": "q?", "answer": "a", "context": "Passage 1:\na."}) + "\n"
            for i in range(n_train)
        )
    for bench in config.get("eval", {}).get("benchmarks", {}).values():
        path = workdir / bench["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(DUMMY_ROWS[bench["format"]]) + "\n")
    return config

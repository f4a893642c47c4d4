"""Helpers for tests that read what `snakemake -n` plans to do."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from longmab.plan import PLACEHOLDER_ROWS, job_counts


def dry_run_counts(proc) -> dict[str, int]:
    """Job counts of a finished dry run, whose stdout and stderr may both carry the table."""
    return job_counts(proc.stdout) or job_counts(proc.stderr)


DUMMY_ROWS = PLACEHOLDER_ROWS


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

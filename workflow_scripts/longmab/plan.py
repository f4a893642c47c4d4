"""``longmab plan CONFIG``: the DAG a config would run, without its data (issue #24).

A newcomer (or a login node before the data is staged) can see how many jobs of each rule a config
plans and what each asks for. The workflow is copied into a temporary folder, every input file the
config names is written there as a one-row placeholder (a training file with one sample per shard,
one row per benchmark file), and ``snakemake -n`` reports the plan; nothing else is touched.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import yaml

#: What a copy of the workflow needs (no results/, no data/).
WORKFLOW_PARTS = ("Snakefile", "rules", "workflow_scripts", "schemas", "envs", "config.yaml", "configs",
                  "profiles", "report")

#: One placeholder row per benchmark format (the config checks read the first row of every file).
PLACEHOLDER_ROWS = {
    "longbench": {"input": "q?", "context": "c.", "answers": ["a"], "_id": "0"},
    "infinitebench": {"id": "0", "input": "q?", "context": "c.", "answer": ["a"]},
}

_STATS_ROW = re.compile(r"^(\S+)\s+(\d+)$")
_RULE = re.compile(r"^(?:local)?rule (\S+):$")


def copy_workflow(repo: Path, dest: Path, parts=WORKFLOW_PARTS) -> Path:
    """Copy ``parts`` of the workflow in ``repo`` (default :data:`WORKFLOW_PARTS`: no results/, no
    data/) into ``dest``; returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in parts:
        src = repo / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            shutil.copy2(src, dest / part)
    return dest


def write_placeholder_inputs(workdir: Path, config: dict, n_train: int | None = None) -> None:
    """The files ``config`` names, as one-row placeholders under ``workdir`` (existing ones kept)."""
    data = config.get("data", {})
    if data.get("train"):
        train = workdir / data["train"]
        if not train.exists():
            n = n_train or max(int(data.get("shards", 1)), 1)
            train.parent.mkdir(parents=True, exist_ok=True)
            train.write_text("".join(json.dumps({"id": str(i), "input": "q?", "answer": "a",
                                                 "context": "Passage 1:\na."}) + "\n" for i in range(n)))
    for bench in (config.get("eval", {}).get("benchmarks") or {}).values():
        path = workdir / bench["path"]
        if bench.get("hub") or path.exists():  # a hub benchmark is the download rule's output
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(PLACEHOLDER_ROWS[bench["format"]]) + "\n")


def job_counts(output: str) -> dict[str, int]:
    """Rule -> planned jobs, from the "Job stats:" table of a dry run (``all`` left out)."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    except StopIteration:
        return counts
    for line in lines[start + 3:]:
        m = _STATS_ROW.match(line.strip())
        if not m or m.group(1) == "total":
            break
        if m.group(1) != "all":
            counts[m.group(1)] = counts.get(m.group(1), 0) + int(m.group(2))
    return counts


def job_resources(output: str) -> dict[str, Counter]:
    """Rule -> Counter of its jobs' ``resources:`` lines in a dry run's job listing."""
    out: dict[str, Counter] = defaultdict(Counter)
    rule = None
    for line in output.splitlines():
        m = _RULE.match(line.strip())
        if m:
            rule = m.group(1)
        elif rule and line.strip().startswith("resources: "):
            res = ", ".join(p for p in line.strip()[len("resources: "):].split(", ")
                            if not p.startswith(("tmpdir=", "mem_mib=", "disk_mib=")))
            out[rule][res] += 1
    return out


def plan(config_files: list[str], repo: Path, replace: bool | None = None, profile: str | None = None,
         extra: list[str] | None = None) -> tuple[dict[str, int], dict[str, Counter], str]:
    """Dry-run ``config_files`` on a placeholder copy of the workflow in ``repo``.

    ``replace`` (default: when the first file's ``preset`` is a paper preset) adds
    ``--replace-workflow-config``. Returns (job counts, resources per rule, the dry run's output).
    Raises ``RuntimeError`` with Snakemake's message when the config is refused.
    """
    first = yaml.safe_load(Path(config_files[0]).read_text()) or {}
    if replace is None:
        replace = str(first.get("preset", "")).startswith("paper-")
    merged: dict = {} if replace else (yaml.safe_load((repo / "config.yaml").read_text()) or {})
    from .runs import deep_merge

    for f in config_files:
        merged = deep_merge(merged, yaml.safe_load(Path(f).read_text()) or {})
    with tempfile.TemporaryDirectory(prefix="longmab-plan-") as tmp:
        work = copy_workflow(repo, Path(tmp))
        write_placeholder_inputs(work, merged)
        files = [str(Path(f).resolve()) for f in config_files]
        cmd = [str(Path(sys.executable).parent / "snakemake"), "-n", "--cores", "1", "--configfile", *files]
        if replace:
            cmd.append("--replace-workflow-config")
        if profile:
            cmd += ["--profile", str((repo / profile).resolve() if (repo / profile).exists() else profile)]
        cmd += list(extra or [])
        proc = subprocess.run(cmd, check=False, cwd=work, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(text[-4000:])
    return job_counts(proc.stdout) or job_counts(proc.stderr), job_resources(text), text


def format_plan(counts: dict[str, int], resources: dict[str, Counter]) -> str:
    """A Markdown table: rule, jobs, what its jobs ask for."""
    lines = ["| rule | jobs | resources (jobs) |", "|---|---:|---|"]
    for rule, n in counts.items():
        res = "; ".join(f"{r or '-'} ({k})" for r, k in resources.get(rule, Counter()).most_common())
        lines.append(f"| {rule} | {n} | {res or 'local rule'} |")
    lines.append(f"| **total** | **{sum(counts.values())}** | |")
    return "\n".join(lines) + "\n"

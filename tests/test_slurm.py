"""The pipeline through `pairs` on a real one-node SLURM, submitted by profiles/slurm.

profiles/slurm-test is stacked on top: no conda (not installable here), no GPUs, squeue for status,
no account. The jobs find the project venv through PATH (sbatch --export=ALL; same machine).
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from conftest import REPO, make_workdir, run_snakemake
from slurm_cluster import SlurmCluster, SlurmUnavailable, ensure_installed

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
PROFILES = ("--profile", "profiles/slurm", "--profile", "profiles/slurm-test")


@pytest.fixture(scope="module")
def cluster():
    try:
        ensure_installed()
    except SlurmUnavailable as exc:
        pytest.skip(str(exc))
    with SlurmCluster() as c:
        yield c


def test_pipeline_through_pairs_on_slurm(cluster, tmp_path, monkeypatch):
    wd = make_workdir(tmp_path / "wf")
    shutil.copy2(REPO / "tests" / "configs" / "tiny.yaml", wd / "tiny.yaml")
    (wd / "one-run.yaml").write_text("runs: null\n")  # the LongMab-PO run only (no SeaLong jobs)
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    proc = run_snakemake(wd, "preference_data", *PROFILES, "--configfile", "tiny.yaml", "one-run.yaml",
                         check=False, timeout=3600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}\n{cluster.logs()}"
    # Every job went through sbatch (the plugin logs one line per submission).
    assert proc.stderr.count("has been submitted with SLURM jobid") >= 1 + 2 * 3 + 1, proc.stderr[-3000:]
    pairs = list((wd / "results" / "pairs").glob("tiny-*/pairs.jsonl"))
    assert len(pairs) == 1, pairs
    stats = json.loads((pairs[0].parent / "stats.json").read_text())
    manifest = json.loads(next((wd / "results" / "data").glob("*/manifest.json")).read_text())
    expected = yaml.safe_load((wd / "tiny.yaml").read_text())["data"]["max_samples"]
    assert manifest["samples_used"] == expected and stats["samples_in"] == expected
    for stage in ("probe", "embed", "rollout"):
        assert sorted(p.name for p in (wd / "results" / stage).glob("*/*.jsonl")) == ["000.jsonl", "001.jsonl"]

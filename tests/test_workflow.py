"""The workflow as a whole, without running any job: lint, the paper configs' plans, the profiles,
and bad configs failing before anything runs."""

from __future__ import annotations

import os
import re
from pathlib import Path
from unittest import mock

import pytest
import yaml
from conftest import REPO, make_workdir, run_snakemake
from dryrun import dry_run_counts, write_dummy_inputs
from longmab.config import load_config

PAPER_CONFIGS = ["paper-llama3", "paper-qwen2"]
GPU_RULES = ["probe", "rollout", "eval", "dpo_train"]  # rules that declare resources: gpu=1


def bare_workdir(dest: Path) -> Path:
    """A copy of the workflow without the (large) built embedded model."""
    with mock.patch.dict(os.environ, {"LONGMAB_TEST_MODEL": str(dest / "no-model")}):
        return make_workdir(dest)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A copy of the workflow with dummy inputs at every path the paper configs name."""
    wd = bare_workdir(tmp_path_factory.mktemp("wf"))
    for name in PAPER_CONFIGS:
        write_dummy_inputs(wd, wd / "configs" / f"{name}.yaml")
    return wd


def test_lint_clean(workdir):
    proc = run_snakemake(workdir, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_validates(name):
    config = load_config(REPO / "configs" / f"{name}.yaml")
    # Written out in full: the file must not rely on defaults (they could change).
    raw = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    assert set(raw) == set(config)
    for key, value in config.items():
        if isinstance(value, dict) and key not in {"prompts"}:
            assert set(raw[key]) == set(value), f"{name}: {key} is not written out in full"
    assert config["data"]["max_samples"] == 5000 and config["data"]["shards"] == 100
    assert (REPO / config["dpo"]["deepspeed"]).is_file()
    assert config["dpo"]["pref_ftx"] == {"paper-llama3": 0.1, "paper-qwen2": 0.2}[name]
    assert config["models"]["template"] == {"paper-llama3": "llama3", "paper-qwen2": "qwen"}[name]


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_plan(workdir, name):
    cfg = yaml.safe_load((workdir / "configs" / f"{name}.yaml").read_text())
    proc = run_snakemake(workdir, "-n", "--configfile", f"configs/{name}.yaml", "--replace-workflow-config")
    counts = dry_run_counts(proc)
    shards = cfg["data"]["shards"]
    assert {r: counts.get(r) for r in ["data", "probe", "embed", "rollout", "pairs"]} == {
        "data": 1,
        "probe": shards,
        "embed": shards,
        "rollout": shards,
        "pairs": 1,
    }, counts
    assert "embedded_policy" not in counts, "a hub-id policy needs no embedded model"
    # One DPO run; one eval job per model (base + trained), each answering every benchmark.
    for rule in ("dpo_config", "dpo_train", "dpo_export_config", "dpo_export", "tables"):
        assert counts.get(rule) == 1, (rule, counts)
    assert counts.get("eval") == len(cfg["eval"]["models"]) == 2, counts
    assert f"results/eval/{cfg['run']}/longbook_qa_eng/metrics.json" in proc.stdout
    # The outputs are named by run, so the two paper configs never overwrite each other.
    assert f"results/pairs/{cfg['run']}/pairs.jsonl" in proc.stdout


def _resources(output: str, rule: str) -> str:
    m = re.search(rf"^rule {rule}:\n(?:    .*\n)*?    resources: (.*)$", output, re.MULTILINE)
    assert m, f"no resources line for rule {rule}"
    return m.group(1)


def test_slurm_profile_requests_gpus(workdir):
    """profiles/slurm plans GPU jobs (conda swapped for env-modules: conda is not installable here)."""
    proc = run_snakemake(workdir, "-n", "--profile", "profiles/slurm", "--sdm", "env-modules")
    assert "profiles/slurm and workflow specific profile profiles/default" in proc.stderr
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.v8+.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["software-deployment-method"] == "conda"
    for rule in GPU_RULES:
        want = profile["set-resources"][rule]["gpu"]
        assert want >= 1 and f"gpu={want}," in _resources(proc.stdout, rule) + ",", rule
    assert "gpu=4" in _resources(proc.stdout, "dpo_train"), "the paper trains on 4 GPUs"
    assert "gpu=" not in _resources(proc.stdout, "data")


def test_slurm_test_profile_drops_gpus(workdir):
    proc = run_snakemake(workdir, "-n", "--profile", "profiles/slurm", "--profile", "profiles/slurm-test")
    for rule in GPU_RULES:
        res = _resources(proc.stdout, rule)
        assert "gpu=0" in res and "cpus_per_task=2" in res, res


def test_local_gpu_profile_parses(workdir):
    proc = run_snakemake(workdir, "-n", "--profile", "profiles/local-gpu")
    assert dry_run_counts(proc)["probe"] == 2


def test_default_profile_is_portable():
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.v8+.yaml").read_text())
    runtime_keys = {
        "executor",
        "software-deployment-method",
        "default-resources",
        "set-resources",
        "resources",
        "cores",
        "jobs",
    }
    assert not runtime_keys & set(profile), "profiles/default is loaded on every run: keep it portable"


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"rollout": {"top_kk": 3}}, "rollout.top_kk"),  # unknown key
        ({"chunking": {"chunk_size": "large"}}, "chunking.chunk_size"),  # wrong type
        ({"sampling": {"top_p": 1.5}}, "sampling.top_p"),  # out of range
        ({"rollout": {"rounds": 0}}, "rollout.rounds"),  # out of range
    ],
    ids=["unknown-key", "wrong-type", "above-maximum", "below-minimum"],
)
def test_bad_config_fails_before_any_job(tmp_path, bad, key):
    wd = bare_workdir(tmp_path / "wf")
    (wd / "bad.yaml").write_text(yaml.safe_dump(bad))
    proc = run_snakemake(wd, "--configfile", "bad.yaml", check=False, timeout=300)  # a real run, not -n
    assert proc.returncode != 0
    assert f"config key '{key}'" in proc.stderr, proc.stderr[-2000:]
    assert "Job stats" not in proc.stdout + proc.stderr
    assert not (wd / "results").exists(), "a job ran before the config was rejected"

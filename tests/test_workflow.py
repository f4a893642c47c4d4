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


def test_snakefmt_clean():
    """The Snakefile and rules/ are formatted as snakefmt formats them (also `make lint`)."""
    import subprocess
    import sys

    proc = subprocess.run([str(Path(sys.executable).parent / "snakefmt"), "--check", "Snakefile", "rules/"],
                          cwd=REPO, capture_output=True, text=True, check=False)
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
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    proc = run_snakemake(workdir, "-n", "--configfile", f"configs/{name}.yaml", "--replace-workflow-config")
    counts = dry_run_counts(proc)
    shards = cfg["data"]["shards"]
    runs = cfg["runs"]
    rollout_runs = [r for r, o in runs.items() if (o or {}).get("pairs", {}).get("method") != "sealong"]
    inits = {((runs[r] or {}).get("init") or {}).get("method", cfg["init"]["method"]) for r in rollout_runs}
    assert len(runs) == 6 and len(rollout_runs) == 5 and len(inits) == 3
    # One probe per shard for all runs, one embed per shard and init method, a rollout per shard and
    # run that rolls out, SeaLong's sampling and MBR once per shard, and per run one pair set, one DPO
    # and one evaluation; the base model is evaluated once.
    assert {r: counts.get(r) for r in ["data", "probe", "embed", "rollout", "sealong", "mbr", "pairs"]} == {
        "data": 1,
        "probe": shards,
        "embed": shards * len(inits),
        "rollout": shards * len(rollout_runs),
        "sealong": shards,
        "mbr": shards,
        "pairs": len(runs),
    }, counts
    assert "embedded_policy" not in counts, "a hub-id policy needs no embedded model"
    assert "embedded_warmup" not in counts, "the format warm-up is the embedded policy's, never the paper's"
    for rule in ("dpo_config", "dpo_train", "dpo_export_config", "dpo_export"):
        assert counts.get(rule) == len(runs), (rule, counts)
    assert counts.get("eval") == len(runs) + 1, counts
    assert counts.get("tables") == 1
    assert f"results/tables/{name}/main.md" in proc.stdout


def planned_outputs(output: str) -> set[str]:
    """Every output path a dry run plans (the `output:` lines of its jobs)."""
    found = set()
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("output: "):
            found.update(p.strip() for p in line[len("output: "):].split(","))
    return found


def test_paper_configs_write_disjoint_paths(workdir):
    """Two configs with different policies never write the same path; they deliberately share only
    the validated data shards (same training file, same sharding) and the download records of the
    embedder and of SeaLong's MBR embedder both use."""
    outs = []
    for name in PAPER_CONFIGS:
        proc = run_snakemake(workdir, "-n", "--configfile", f"configs/{name}.yaml", "--replace-workflow-config")
        outs.append(planned_outputs(proc.stdout))
    shared = outs[0] & outs[1]
    assert outs[0] and outs[1] and shared
    embedders = {"results/download/models/openbmb--MiniCPM-Embedding@main.json",
                 "results/download/models/jinaai--jina-embeddings-v3@main.json"}
    assert all(p.startswith("results/data/") or p in embedders for p in shared), sorted(shared)[:10]
    assert embedders <= shared


def _ablation_config(workdir, runs) -> str:
    (workdir / "ablate.yaml").write_text(yaml.safe_dump({"study": "ablate", "runs": runs}))
    return "ablate.yaml"


def test_init_runs_share_one_probe_job_per_shard(workdir):
    runs = {"p": {}, "q": {"init": {"method": "query_similarity"}}, "r": {"init": {"method": "random"}}}
    counts = dry_run_counts(run_snakemake(workdir, "-n", "--configfile", _ablation_config(workdir, runs)))
    shards = load_config(REPO / "config.yaml")["data"]["shards"]
    assert counts["probe"] == shards and counts["embed"] == 3 * shards and counts["rollout"] == 3 * shards, counts
    assert counts["eval"] == 3 + 1 and counts["dpo_train"] == 3


def test_strategy_runs_share_their_embed_jobs(workdir):
    runs = {"ucb": {}, "rk": {"rollout": {"strategy": "random"}}, "full": {"rollout": {"strategy": "full"}}}
    counts = dry_run_counts(run_snakemake(workdir, "-n", "--configfile", _ablation_config(workdir, runs)))
    shards = load_config(REPO / "config.yaml")["data"]["shards"]
    assert counts["probe"] == shards and counts["embed"] == shards and counts["rollout"] == 3 * shards, counts


def test_embedded_runs_share_one_format_warmup(workdir):
    """The default config warms the embedded policy up once for every run (and the base row); with
    models.warmup.enabled false no warm-up is planned and the jobs read the raw model folder."""
    runs = {"a": {}, "b": {"rollout": {"strategy": "random"}}}
    proc = run_snakemake(workdir, "-n", "--configfile", _ablation_config(workdir, runs))
    counts = dry_run_counts(proc)
    assert counts["embedded_policy"] == 1 and counts["embedded_warmup"] == 1, counts
    assert "results/models/policy-warmup-" in proc.stdout
    (workdir / "cold.yaml").write_text(yaml.safe_dump({"models": {"warmup": {"enabled": False}}}))
    counts = dry_run_counts(run_snakemake(workdir, "-n", "--configfile", "cold.yaml"))
    assert counts["embedded_policy"] == 1 and "embedded_warmup" not in counts, counts


def test_ablations_config_plans_the_papers_matrix(workdir):
    proc = run_snakemake(workdir, "-n", "--configfile", "configs/ablations.yaml")
    counts = dry_run_counts(proc)
    # 7 runs (sealong and sealong-orpo share SeaLong's samples and MBR scores) + base
    assert counts["eval"] == 8 and counts["dpo_train"] == 7 and counts["sealong"] == counts["probe"], counts
    assert counts["mbr"] == counts["sealong"] and counts["pairs"] == 7, counts
    assert "results/tables/ablations/data_quality.md" in proc.stdout


def test_demo_configs_plan_the_miniature(workdir):
    """make demo: base + 3 runs sharing one probe per shard; demo-full adds 2 runs on the same
    upstream outputs (one more embed per shard, for the question-similarity init)."""
    proc = run_snakemake(workdir, "-n", "--configfile", "configs/demo.yaml")
    counts = dry_run_counts(proc)
    shards = load_config(REPO / "configs" / "demo.yaml")["data"]["shards"]
    assert counts["eval"] == 4 and counts["dpo_train"] == 3 and counts["probe"] == shards, counts
    assert counts["rollout"] == 2 * shards and counts["sealong"] == shards, counts
    assert "results/tables/demo/main.md" in proc.stdout and "data/demo/train.jsonl" in proc.stdout
    counts = dry_run_counts(run_snakemake(workdir, "-n", "--configfile", "configs/demo.yaml",
                                          "configs/demo-full.yaml"))
    assert counts["eval"] == 6 and counts["dpo_train"] == 5 and counts["probe"] == shards, counts
    assert counts["embed"] == 2 * shards and counts["rollout"] == 4 * shards, counts


def test_a_preference_file_run_plans_no_probe_or_rollout(workdir):
    """pairs.from_file: the run trains on the file (pairs -> DPO -> merge -> eval) beside a run that
    makes its own pairs, and a file-only config plans no data, probe, rollout or SeaLong job."""
    pairs = workdir / "ready.jsonl"
    pairs.write_text('{"prompt": "Q?", "chosen": "Answer: a", "rejected": "b"}\n')
    (workdir / "ff.yaml").write_text(yaml.safe_dump({"study": "ff", "runs": {
        "released": {"pairs": {"from_file": "ready.jsonl"}}}}))
    proc = run_snakemake(workdir, "-n", "--configfile", "ff.yaml")
    counts = dry_run_counts(proc)
    assert counts["pairs"] == 1 and counts["dpo_train"] == 1 and counts["eval"] == 2, counts
    for rule in ("data", "probe", "embed", "rollout", "sealong", "mbr"):
        assert rule not in counts, counts
    (workdir / "ff2.yaml").write_text(yaml.safe_dump({"study": "ff2", "runs": {
        "released": {"pairs": {"from_file": "ready.jsonl"}}, "ours": {}}}))
    counts = dry_run_counts(run_snakemake(workdir, "-n", "--configfile", "ff2.yaml"))
    assert counts["pairs"] == 2 and counts["dpo_train"] == 2 and counts["probe"] >= 1, counts
    (workdir / "ff3.yaml").write_text(yaml.safe_dump({"runs": {"x": {"pairs": {"from_file": "nope.jsonl"}}}}))
    proc = run_snakemake(workdir, "-n", "--configfile", "ff3.yaml", check=False)
    assert proc.returncode != 0 and "pairs.from_file" in proc.stderr + proc.stdout and "nope.jsonl" in proc.stderr + proc.stdout


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


def test_jobs_import_the_workflows_own_library(tmp_path):
    """A job runs the library of the workflow it belongs to (PYTHONPATH set by rules/common.smk),
    not the checkout the virtualenv's editable install points to."""
    wd = bare_workdir(tmp_path / "wf")
    stage = wd / "workflow_scripts" / "longmab" / "stages" / "data.py"
    text = stage.read_text()
    marker = '    write_json(manifest_path, manifest)\n'
    assert marker in text
    stage.write_text(text.replace(marker, '    manifest["library"] = __file__\n' + marker, 1))
    from longmab.config import validate_runs
    from longmab.runs import build_plan

    cfg = load_config(wd / "config.yaml")
    data_tag = build_plan(cfg, configs=validate_runs(cfg)).runs["embedded"]["data"]
    target = f"results/data/{data_tag}/manifest.json"
    run_snakemake(wd, target, timeout=300)
    import json

    library = json.loads((wd / target).read_text())["library"]
    assert Path(library).resolve().is_relative_to(wd.resolve()), library


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_released_checkpoint_config_evaluates_only(workdir, name):
    """configs/eval-released-*.yaml: the base model and the released checkpoint (downloaded once),
    no probe, rollout, SeaLong or training job."""
    proc = run_snakemake(workdir, "-n", "--configfile", f"configs/{name}.yaml",
                         f"configs/eval-released-{name.split('-')[1]}.yaml", "--replace-workflow-config")
    counts = dry_run_counts(proc)
    assert counts.get("eval") == 2 and counts.get("tables") == 1, counts
    for rule in ("data", "probe", "embed", "rollout", "sealong", "mbr", "pairs", "dpo_train", "dpo_export"):
        assert rule not in counts, (rule, counts)
    assert "rocketduan--" in proc.stdout and "LongMab-PO-released" in proc.stdout


def test_longmab_plan_shows_the_paper_dag_without_its_data():
    """`longmab plan configs/paper-llama3.yaml`: job counts and resources per rule, no data needed."""
    import subprocess
    import sys

    proc = subprocess.run([str(Path(sys.executable).parent / "longmab"), "plan", "configs/paper-llama3.yaml"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| probe | 100 | gpu=1 (100) |" in proc.stdout and "| rollout | 500 |" in proc.stdout
    assert "| **total** | **1146** |" in proc.stdout
    assert not (REPO / "data" / "train_data").exists()  # nothing written into the checkout


def test_served_adapters_evaluate_without_waiting_for_the_merge(workdir):
    """eval.adapters: the trained row's eval job takes the DPO adapter and the policy, not the merged
    model (dpo_export is no ancestor of any eval job), while `all` still builds the merged model;
    with the transformers engine the config fails before any job."""
    (workdir / "ad.yaml").write_text(yaml.safe_dump({"study": "ad", "eval": {"adapters": True}}))
    merged = dry_run_counts(run_snakemake(workdir, "-n", "--until", "eval"))
    served = dry_run_counts(run_snakemake(workdir, "-n", "--until", "eval", "--configfile", "ad.yaml"))
    assert merged.get("dpo_export") == 1 and served["eval"] == merged["eval"] == 2, (merged, served)
    assert "dpo_export" not in served and served.get("dpo_train") == 1, served
    assert dry_run_counts(run_snakemake(workdir, "-n", "--configfile", "ad.yaml")).get("dpo_export") == 1
    (workdir / "ad2.yaml").write_text(yaml.safe_dump({"eval": {"adapters": True, "backend": "transformers"}}))
    proc = run_snakemake(workdir, "-n", "--configfile", "ad2.yaml", check=False)
    assert proc.returncode != 0 and "eval.adapters" in proc.stderr + proc.stdout

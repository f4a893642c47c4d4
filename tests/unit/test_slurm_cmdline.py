"""The sbatch and srun lines our profiles produce, built by the installed SLURM plugin's own code.

Snakemake's dry run (``--profile profiles/slurm``, a paper config with one shard) gives every job's
final resources (rule declarations + the profile's default-resources / set-resources); each is fed
through ``snakemake_executor_plugin_slurm``'s ``get_submit_command`` + ``set_gres_string`` (the sbatch
line) and ``snakemake_executor_plugin_slurm_jobstep``'s CPU / GPU / node settings (the srun of the job
step). Checked for every rule that SLURM runs:

* no sbatch line has both ``--ntasks-per-gpu`` and ``--cpus-per-task``: inside the job that is
  SLURM_NTASKS_PER_GPU + SLURM_TRES_PER_TASK, and any srun that inherits them dies with "srun: fatal:
  SLURM_TRES_PER_TASK is mutually exclusive with --ntasks-per-gpu and SLURM_NTASKS_PER_GPU"
  (plugin issues #342, #373; jobstep 0.6.1 scrubs them, older job steps or a user's own srun do not);
* GPU jobs ask sbatch and srun for exactly the profile's GPUs, on one node; dpo_train for 4 GPUs
  with ``--nodes=1``; CPU jobs for none;
* the one-node test stack (profiles/slurm + profiles/slurm-test) asks for no GPU at all.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import REPO, make_workdir, run_snakemake
from dryrun import write_dummy_inputs

slurm = pytest.importorskip("snakemake_executor_plugin_slurm")
from snakemake_executor_plugin_slurm import ExecutorSettings  # noqa: E402
from snakemake_executor_plugin_slurm.submit_string import get_submit_command  # noqa: E402
from snakemake_executor_plugin_slurm.utils import set_gres_string  # noqa: E402
from snakemake_executor_plugin_slurm.validation import validate_slurm_extra  # noqa: E402
from snakemake_executor_plugin_slurm_jobstep import get_cpu_setting, get_gpu_setting, get_node_setting  # noqa: E402

PROFILE = yaml.safe_load((REPO / "profiles" / "slurm" / "config.v8+.yaml").read_text())
TEST_PROFILE = yaml.safe_load((REPO / "profiles" / "slurm-test" / "config.v8+.yaml").read_text())


class Resources(dict):
    """Snakemake's job.resources: mapping and attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Job:
    def __init__(self, name: str, resources: dict, threads: int = 1):
        self.name, self.resources, self.threads = name, Resources(resources), threads

    def is_group(self):
        return False


def _value(text: str):
    text = text.strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def planned_jobs(output: str) -> dict[str, Job]:
    """rule -> one planned job (its resources and threads) from a dry run's job listing."""
    jobs: dict[str, Job] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", output):
        m = re.match(r"(?:local)?rule (\w+):\n", block)
        if not m or m.group(1) in jobs:
            continue
        res = re.search(r"^    resources: (.*)$", block, re.MULTILINE)
        thr = re.search(r"^    threads: (\d+)$", block, re.MULTILINE)
        resources = {}
        if res:
            for item in res.group(1).split(", "):
                k, _, v = item.partition("=")
                resources[k] = _value(v)
        jobs[m.group(1)] = Job(m.group(1), resources, int(thr.group(1)) if thr else 1)
    return jobs


def local_rules() -> set[str]:
    """Rules named in any `localrules:` block (they run inside Snakemake, never through sbatch)."""
    names = {"all", "preference_data"}
    for path in [REPO / "Snakefile", *(REPO / "rules").glob("*.smk")]:
        for block in re.findall(r"^localrules:\n((?:    \w+,?\n)+)", path.read_text(), re.MULTILINE):
            names |= set(re.findall(r"\w+", block))
    return names


def sbatch_line(job: Job) -> str:
    """The plugin's sbatch command for ``job`` (account / partition as the executor formats them)."""
    part = job.resources.get("slurm_partition")
    params = {"run_uuid": "uuid", "slurm_logfile": f"results/logs/slurm/rule_{job.name}/%j.log",
              "comment_str": f"rule_{job.name}", "account": "", "partition": f"-p {part}" if part else "",
              "workdir": "/work"}
    validate_slurm_extra(job)
    return get_submit_command(job, params, settings=ExecutorSettings()) + set_gres_string(job)


def srun_line(job: Job, sbatch: str) -> str:
    """The job step's srun (jobstep plugin): SLURM_GPUS is set in the job when sbatch had --gpus."""
    m = re.search(r"--gpus=(\S+)", sbatch)
    gpu_job = m.group(1) if m else None
    return " ".join(["srun -n1 --cpu-bind=q", get_cpu_setting(job, gpu_job), get_gpu_setting(job),
                     get_node_setting(job)])


def flags(line: str) -> dict[str, str]:
    out = {}
    for tok in shlex.split(line):
        if tok.startswith("--"):
            k, _, v = tok[2:].partition("=")
            out[k] = v
    return out


def srun_fatal(sbatch: str) -> bool:
    """SLURM >= 23.11: an srun in a job whose allocation set both SLURM_TRES_PER_TASK (from
    --cpus-per-task) and SLURM_NTASKS_PER_GPU (from --ntasks-per-gpu) refuses to start."""
    f = flags(sbatch)
    return "ntasks-per-gpu" in f and "cpus-per-task" in f


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, {"LONGMAB_TEST_MODEL": str(tmp_path_factory.getbasetemp() / "none")}):
        wd = make_workdir(tmp_path_factory.mktemp("slurm-cmd"))
    cfg = yaml.safe_load((wd / "configs" / "paper-llama3.yaml").read_text())
    cfg["data"]["shards"] = 1  # one job per rule and run is enough
    (wd / "one-shard.yaml").write_text(yaml.safe_dump(cfg))
    write_dummy_inputs(wd, wd / "one-shard.yaml")
    return wd


def dry_run(workdir: Path, *profiles: str) -> dict[str, Job]:
    args = [a for p in profiles for a in ("--profile", p)]
    proc = run_snakemake(workdir, "-n", *args, "--sdm", "env-modules", "--configfile", "one-shard.yaml",
                         "--replace-workflow-config")
    return planned_jobs(proc.stdout)


@pytest.fixture(scope="module")
def slurm_jobs(workdir) -> dict[str, Job]:
    return {k: v for k, v in dry_run(workdir, "profiles/slurm").items() if k not in local_rules()}


@pytest.fixture(scope="module")
def slurm_test_jobs(workdir) -> dict[str, Job]:
    jobs = dry_run(workdir, "profiles/slurm", "profiles/slurm-test")
    return {k: v for k, v in jobs.items() if k not in local_rules()}


def test_the_dry_run_covers_every_stage(slurm_jobs):
    want = {"data", "probe", "embed", "rollout", "pairs", "dpo_train", "dpo_export", "eval", "sealong", "mbr"}
    assert want <= set(slurm_jobs), sorted(slurm_jobs)


def test_control_the_plugins_default_gpu_line_is_the_fatal_one():
    """What the profile had before: gpu + cpus_per_task without tasks_per_gpu."""
    job = Job("probe", {"gpu": 1, "cpus_per_task": 8, "mem_mb": 64000, "runtime": 120})
    line = sbatch_line(job)
    assert "--ntasks-per-gpu=1" in line and "--cpus-per-task=8" in line and srun_fatal(line)


def test_no_sbatch_line_is_fatal_for_srun(slurm_jobs):
    for name, job in slurm_jobs.items():
        line = sbatch_line(job)
        assert not srun_fatal(line), f"rule {name}: {line}"


def test_gpu_rules_get_their_gpus_on_one_node(slurm_jobs):
    gpu_rules = {name for name, job in slurm_jobs.items() if int(job.resources.get("gpu", 0) or 0) > 0}
    assert {"probe", "embed", "rollout", "eval", "dpo_train", "sealong", "mbr"} <= gpu_rules
    for name in gpu_rules:
        job = slurm_jobs[name]
        want = PROFILE["set-resources"][name]["gpu"]
        assert job.resources["gpu"] == want, name
        sb = sbatch_line(job)
        f = flags(sb)
        assert f.get("gpus") == str(want) and "ntasks-per-gpu" not in f, f"{name}: {sb}"
        assert f.get("cpus-per-task") == str(PROFILE["set-resources"][name]["cpus_per_task"]), sb
        sr = flags(srun_line(job, sb))
        assert sr.get("gpus") == str(want) and sr.get("nodes") == "1", f"{name}: {sr}"
        assert sr.get("cpus-per-task") == f["cpus-per-task"], f"{name}: step and job agree on CPUs"


def test_dpo_train_gets_four_gpus_on_one_node(slurm_jobs):
    sb = sbatch_line(slurm_jobs["dpo_train"])
    f = flags(sb)
    assert (f.get("gpus"), f.get("nodes")) == ("4", "1"), sb
    assert f.get("cpus-per-task") == "32" and "--mem 256000" in sb, sb


def test_cpu_rules_get_one_task_and_no_gpu(slurm_jobs):
    for name in ("data", "pairs", "dpo_export"):
        job = slurm_jobs[name]
        sb = sbatch_line(job)
        f = flags(sb)
        assert f.get("ntasks") == "1" and "gpus" not in f and "gres" not in f, f"{name}: {sb}"
        assert "gpus" not in flags(srun_line(job, sb)), name


def test_partitions_reach_sbatch():
    job = Job("probe", {**PROFILE["set-resources"]["probe"], "slurm_partition": "gpu"})
    assert " -p gpu " in sbatch_line(job) + " "


def test_slurm_test_stack_asks_for_no_gpu(slurm_test_jobs):
    assert set(PROFILE["set-resources"]) <= set(TEST_PROFILE["set-resources"]), (
        "profiles/slurm-test replaces set-resources as a whole: every rule of profiles/slurm must be listed")
    for name, job in slurm_test_jobs.items():
        sb = sbatch_line(job)
        f = flags(sb)
        assert "gpus" not in f and "gres" not in f and not srun_fatal(sb), f"{name}: {sb}"
        assert int(f.get("cpus-per-task", "1")) <= 2, f"{name} does not fit the 2-CPU test node: {sb}"


def test_local_gpu_profile_gives_every_gpu_rule_the_gpu_resource(workdir):
    """profiles/local-gpu: the GPU rules (embed and mbr included) hold the `gpu` resource, so at most
    `resources: gpu` of them run at once and a vLLM job never shares the GPU with the embedder."""
    proc = run_snakemake(workdir, "-n", "--profile", "profiles/local-gpu", "--configfile", "one-shard.yaml",
                         "--replace-workflow-config")
    jobs = planned_jobs(proc.stdout)
    for name in ("probe", "embed", "rollout", "eval", "sealong", "mbr", "dpo_train"):
        assert int(jobs[name].resources.get("gpu", 0)) == 1, (name, jobs[name].resources)
    assert int(jobs["data"].resources.get("gpu", 0) or 0) == 0
    profile = yaml.safe_load((REPO / "profiles" / "local-gpu" / "config.v8+.yaml").read_text())
    assert profile["resources"]["gpu"] == 1

"""Reliability guarantees of the workflow (issue #13), checked on copies of the real workflow:

- a bad config fails before any job runs, with a message naming its key and value (dry run and a
  real run; nothing is written to results/);
- after ``kill -9`` the one documented command, ``make resume``, completes the run (the README's old
  ``snakemake --rerun-incomplete`` stops with a LockException);
- ``make resume`` refuses while the run is still alive;
- a requested stop (``make stop`` = SIGTERM, or Ctrl-C = SIGINT to the process group) ends with an
  honest report, not "At least one job did not complete successfully", and exit status 128 + signal.

The run-control tests add a rule that sleeps (``results/sleep/{name}.txt``) to their copy of the
Snakefile: the lock and signal behaviour is Snakemake's and the Snakefile's hooks', not a stage's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from unittest import mock

import pytest
import yaml
from conftest import BIN, REPO, make_workdir, run_snakemake, snakemake_env


def bare_workdir(dest: Path) -> Path:
    """A copy of the workflow without the (large) built embedded model."""
    with mock.patch.dict(os.environ, {"LONGMAB_TEST_MODEL": str(dest / "no-model")}):
        return make_workdir(dest)


# --------------------------------------------------------------------------------------------------
# Bad configs fail at parse time, naming the key and the value

BAD_CONFIGS = [
    ("rounds-float", {"rollout": {"rounds": 4.0}}, "rollout.rounds", "must be an integer, got 4.0"),
    ("top_k-float", {"rollout": {"top_k": 2.0}}, "rollout.top_k", "must be an integer, got 2.0"),
    ("run-override-float", {"runs": {"a": {"rollout": {"top_k": 2.0}}}}, "runs.a.rollout.top_k", "got 2.0"),
    ("overlap", {"chunking": {"chunk_size": 8, "overlap_fragments": 50}}, "chunking.overlap_fragments",
     "50 fragments of overlap"),
    ("probe-template", {"prompts": {"probe": "Explain the answer."}}, "prompts.probe",
     "'Explain the answer.': prompt template 'probe' lacks the field(s)"),
    ("answer-template-file", {"prompts": {"answer": "prompts/answer.txt"}}, "prompts.answer",
     "template file not found: 'prompts/answer.txt'"),
    ("policy-path", {"models": {"policy": "./models/no-such-llama"}}, "models.policy",
     "model folder not found: './models/no-such-llama'"),
    ("train-missing", {"data": {"train": "data/missing.jsonl"}}, "data.train",
     "file not found: 'data/missing.jsonl'"),
    ("train-empty", {"data": {"train": ""}}, "data.train", "is empty"),
    ("benchmark-missing", {"eval": {"benchmarks": {"narrativeqa": {"path": "data/test/narrativeqa.jsonl",
                                                                   "format": "longbench"}}}},
     "eval.benchmarks.narrativeqa.path", "file not found: 'data/test/narrativeqa.jsonl'"),
    ("shards", {"data": {"shards": 100}}, "data.shards", "100 shards for 64 samples"),
    ("shards-max-samples", {"data": {"shards": 4, "max_samples": 3}}, "data.shards", "4 shards for 3 samples"),
    ("rollout-window", {"rollout": {"top_k": 200}}, "rollout.top_k", "200 chunks of chunking.chunk_size 64"),
    ("cutoff", {"dpo": {"cutoff_len": 1000}}, "dpo.cutoff_len", "1000 is below pairs.max_prompt_length 3072"),
    ("chat-template", {"models": {"template": "chatmll"}}, "models.template", "'chatmll' is not a LLaMA-Factory"),
    ("deepspeed", {"dpo": {"deepspeed": "configs/ds_z3.json"}}, "dpo.deepspeed", "'configs/ds_z3.json'"),
]


@pytest.fixture(scope="module")
def config_workdir(tmp_path_factory) -> Path:
    return bare_workdir(tmp_path_factory.mktemp("reliability-config"))


def assert_rejected(proc: subprocess.CompletedProcess, workdir: Path, key: str, value: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    lines = [line for line in out.splitlines() if f"config key '{key}':" in line]  # Snakemake 9 logs to stdout
    assert lines, out[-3000:]
    assert any(value in line for line in lines), lines
    for later in ("MissingInputException", "Empty file path", "Job stats", "TypeError"):
        assert later not in out, out[-3000:]
    assert not (workdir / "results").exists(), "something was written before the config was rejected"


@pytest.mark.parametrize("bad, key, value", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_fails_at_dry_run_naming_key_and_value(config_workdir, bad, key, value):
    (config_workdir / "bad.yaml").write_text(yaml.safe_dump(bad))
    proc = run_snakemake(config_workdir, "-n", "--configfile", "bad.yaml", check=False, timeout=300)
    assert_rejected(proc, config_workdir, key, value)


def test_missing_training_file_fails_a_real_run_before_any_job(tmp_path):
    wd = bare_workdir(tmp_path / "wf")
    (wd / "bad.yaml").write_text(yaml.safe_dump({"data": {"train": "data/train_data/train.jsonl"}}))
    proc = run_snakemake(wd, "--configfile", "bad.yaml", check=False, timeout=300)  # not -n
    assert_rejected(proc, wd, "data.train", "file not found: 'data/train_data/train.jsonl'")


# --------------------------------------------------------------------------------------------------
# Resume and stop

SLEEP_S = 8
SLEEPER = f'''

rule reliability_sleeper:
    output:
        "results/sleep/{{name}}.txt",
    shell:
        "touch results/sleep/{{wildcards.name}}.started && sleep {SLEEP_S} && echo done > {{output}}"
'''
TARGETS = [f"results/sleep/{n}.txt" for n in "abcd"]


@pytest.fixture
def sleepy_workdir(tmp_path) -> Path:
    """The workflow plus the sleeping rule, and what `make` needs to run this repo's Makefile there."""
    wd = bare_workdir(tmp_path / "wf")
    with open(wd / "Snakefile", "a", encoding="utf-8") as fh:
        fh.write(SLEEPER)
    for name in ("Makefile", "requirements.txt", "pyproject.toml"):
        shutil.copy2(REPO / name, wd / name)
    (wd / "results" / "sleep").mkdir(parents=True)
    (wd / ".stamp").touch()  # the set-up stamp: this test runs in the current virtualenv
    return wd


def make(workdir: Path, target: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`make TARGET` with this repo's Makefile in ``workdir``, in the virtualenv running the tests."""
    cmd = ["make", "--no-print-directory", target, f"VENV={BIN.parent}", f"STAMP={workdir / '.stamp'}",
           "CORES=2", f"SNAKEMAKE_ARGS={' '.join(TARGETS)}", *args]
    return subprocess.run(cmd, cwd=workdir, env=snakemake_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def start_run(workdir: Path) -> subprocess.Popen:
    """`snakemake --cores 2` of the four sleeping targets, in its own process group; returns when two
    jobs run."""
    proc = subprocess.Popen([str(BIN / "snakemake"), "--cores", "2", *TARGETS], cwd=workdir, env=snakemake_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 180
    while len(list((workdir / "results" / "sleep").glob("*.started"))) < 2:
        if proc.poll() is not None or time.time() > deadline:
            out, err = proc.communicate()
            raise AssertionError(f"the run did not start two jobs ({proc.returncode}):\n{out[-2000:]}\n{err[-3000:]}")
        time.sleep(0.2)
    return proc


def done(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / "results" / "sleep").glob("*.txt")
                  if p.read_text().strip() == "done")


@pytest.mark.slow
def test_make_resume_completes_a_run_after_kill_9(sleepy_workdir):
    wd = sleepy_workdir
    run = start_run(wd)
    os.killpg(run.pid, signal.SIGKILL)  # Snakemake and its jobs, as a crash or the OOM killer would
    run.communicate()
    assert list((wd / ".snakemake" / "locks").iterdir()), "kill -9 leaves Snakemake's lock behind"
    old = run_snakemake(wd, "--rerun-incomplete", *TARGETS, check=False, timeout=300)
    assert old.returncode != 0 and "LockException" in old.stdout + old.stderr  # the README's old command
    resumed = make(wd, "resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    assert "safe to unlock and resume" in resumed.stdout
    assert "is gone (killed or crashed)" in resumed.stdout  # the dead run's record, found and cleared
    assert done(wd) == ["a.txt", "b.txt", "c.txt", "d.txt"]
    assert not list((wd / ".snakemake" / "longmab-runs").glob("*.json"))
    assert not (wd / ".snakemake" / "locks").exists() or not list((wd / ".snakemake" / "locks").iterdir())


@pytest.mark.slow
def test_resume_refuses_while_running_and_make_stop_ends_honestly(sleepy_workdir):
    wd = sleepy_workdir
    run = start_run(wd)
    try:
        refused = make(wd, "resume")
        assert refused.returncode != 0
        assert "NOT safe to resume" in refused.stderr and f"pid {run.pid}:" in refused.stderr, refused.stderr[-3000:]
        stop = make(wd, "stop")
        assert stop.returncode == 0 and f"asked Snakemake (pid {run.pid}) to stop" in stop.stdout, stop.stderr
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "did not complete successfully" not in out + err
    assert "Stopped on request (SIGTERM at" in err and "No job failed." in err
    assert "finished in this run: 2 jobs" in err and "resume with: make resume" in err
    assert len(done(wd)) == 2  # the running jobs finished correctly; nothing new started
    resumed = make(wd, "resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    assert done(wd) == ["a.txt", "b.txt", "c.txt", "d.txt"]


@pytest.mark.slow
def test_ctrl_c_ends_honestly_and_make_resume_finishes(sleepy_workdir):
    wd = sleepy_workdir
    run = start_run(wd)
    os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    out, err = run.communicate(timeout=120)
    assert run.returncode == 128 + signal.SIGINT, err[-3000:]
    assert "did not complete successfully" not in out + err
    assert "Stopped on request (SIGINT at" in err and "resume with: make resume" in err
    assert done(wd) == []
    resumed = make(wd, "resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    assert done(wd) == ["a.txt", "b.txt", "c.txt", "d.txt"]

"""Shared fixtures. Slow fixtures run the real pipeline once per test session on a tiny config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from longmab.plan import WORKFLOW_PARTS, copy_workflow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COPY = (*WORKFLOW_PARTS, "data")


def snakemake_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def make_workdir(dest: Path) -> Path:
    """A copy of the workflow (no results/, no .venv) in ``dest``; reuses a built embedded model."""
    copy_workflow(REPO, dest, COPY)
    model = Path(os.environ.get("LONGMAB_TEST_MODEL", REPO / "results" / "models" / "policy"))
    if (model / "config.json").exists():
        (dest / "results" / "models").mkdir(parents=True, exist_ok=True)
        shutil.copytree(model, dest / "results" / "models" / "policy")
    return dest


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1800) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "snakemake"), "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=snakemake_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="session")
def policy_model(tmp_path_factory) -> str:
    """The embedded SmolLM2 policy folder: ``$LONGMAB_TEST_MODEL``, else results/models/policy if it
    was built, else built once into a temporary folder."""
    env = os.environ.get("LONGMAB_TEST_MODEL")
    if env:
        return env
    built = REPO / "results" / "models" / "policy"
    if (built / "config.json").exists():
        return str(built)
    from longmab.models import build_embedded_policy

    return str(build_embedded_policy(tmp_path_factory.mktemp("models") / "policy"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The whole pipeline, run once on tests/configs/tiny.yaml; returns the work directory.

    data/ of the copy is replaced by tests/fixtures/tiny_data/ (easier samples, so that the tiny
    SmolLM2 run yields preference pairs to train on; see the README there).

    ``LONGMAB_TINY_RUN=<dir>`` reuses such a work directory from an earlier session (developers:
    re-run the e2e assertions without the 10-minute pipeline; Snakemake still brings it up to date)."""
    reuse = os.environ.get("LONGMAB_TINY_RUN")
    if reuse:
        run_snakemake(Path(reuse), "--configfile", "tiny.yaml")
        return Path(reuse)
    workdir = make_workdir(tmp_path_factory.mktemp("tiny"))
    shutil.copy2(REPO / "tests" / "configs" / "tiny.yaml", workdir / "tiny.yaml")
    shutil.rmtree(workdir / "data")
    shutil.copytree(REPO / "tests" / "fixtures" / "tiny_data", workdir / "data")
    run_snakemake(workdir, "--configfile", "tiny.yaml")
    return workdir

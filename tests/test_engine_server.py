"""The shared engine server (engine.mode server, longmab/engines/server.py) with real engines: the
same texts as the in-process engine, one start for many jobs, and no server left behind however its
run ends (slow: engine starts)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from longmab.engines import SamplingConfig, make_engine, stream_generate
from longmab.engines.server import (
    EngineServerError,
    cleanup,
    connect,
    list_servers,
    owner_alive,
    resolve_mode,
    stop_servers,
)
from longmab.runctl import read_proc

pytestmark = pytest.mark.slow

CONVS = [[{"role": "user", "content": f"Name {i + 2} colours of the rainbow."}] for i in range(4)]
SAMPLED = SamplingConfig(temperature=0.7, top_p=0.95, max_tokens=12)
SETTINGS = {"dtype": "float32", "max_model_len": 1024, "seed": 0}


def alive(pid: int) -> bool:
    p = read_proc(pid)
    return p is not None and Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0


def wait_gone(pid: int, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def owner():
    """A stand-in for the Snakemake process of a run: the servers' owner."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    yield proc.pid, read_proc(proc.pid).start, proc
    proc.kill()
    proc.wait()


@pytest.fixture
def run_dir(tmp_path):
    yield tmp_path
    stop_servers(tmp_path, grace=5)


def work(engine):
    texts = engine.generate(CONVS, SAMPLED, [1, 2, 3, 4])
    got = {}

    def on_done(key, text):
        got[key] = text
        return [(key + 10, CONVS[0], 99)] if key < 2 else []

    stream_generate(engine, [(i, c, i) for i, c in enumerate(CONVS[:3])], SAMPLED, on_done)
    return texts, got


@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_server_texts_equal_inprocess_and_one_start_serves_many_jobs(backend, policy_model, run_dir, owner):
    if backend == "vllm":
        pytest.importorskip("vllm")
    local = make_engine(backend, policy_model, **SETTINGS)
    try:
        expected = work(local)
    finally:
        local.close()
    first = connect(backend, policy_model, SETTINGS, run_dir=run_dir, owner=owner[:2])
    assert work(first) == expected, "a call through the server must give the in-process engine's texts"
    pid = first.info["pid"]
    first.close()
    second = connect(backend, policy_model, SETTINGS, run_dir=run_dir, owner=owner[:2])
    assert second.info["pid"] == pid, "the second job must reuse the running server"
    assert second.start_seconds < 5
    assert work(second) == expected
    second.close()
    [(_, rec)] = list_servers(run_dir)
    assert rec["pid"] == pid and oct(os.stat(next(run_dir.glob(".snakemake/longmab-engines/*.json"))).st_mode)[-3:] == "600"
    # other settings are another engine
    other = connect(backend, policy_model, {**SETTINGS, "max_model_len": 512}, run_dir=run_dir, owner=owner[:2])
    assert other.info["pid"] != pid
    other.close()
    assert len(list_servers(run_dir)) == 2


def test_server_exits_when_its_run_is_killed(policy_model, run_dir, owner):
    client = connect("transformers", policy_model, SETTINGS, run_dir=run_dir, owner=owner[:2])
    pid = client.info["pid"]
    client.close()
    assert alive(pid)
    owner[2].send_signal(signal.SIGKILL)  # kill -9 of "Snakemake"
    owner[2].wait()
    assert not owner_alive(owner[:2])
    assert wait_gone(pid), "the server must exit when every owner is gone"
    assert list_servers(run_dir) == [], "and remove its record"


def test_server_stays_while_a_job_is_connected_then_exits(policy_model, run_dir, owner):
    client = connect("transformers", policy_model, SETTINGS, run_dir=run_dir, owner=owner[:2])
    pid = client.info["pid"]
    owner[2].kill()
    owner[2].wait()
    time.sleep(3)
    assert alive(pid), "a connected job keeps its server"
    assert client.generate(CONVS[:1], SAMPLED, [5])
    client.close()
    assert wait_gone(pid)


def test_killed_server_fails_the_job_clearly_and_the_next_job_starts_a_new_one(policy_model, run_dir, owner):
    client = connect("transformers", policy_model, SETTINGS, run_dir=run_dir, owner=owner[:2])
    pid = client.info["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid)
    with pytest.raises(EngineServerError, match=r"stopped answering.*make resume"):
        client.generate(CONVS[:1], SAMPLED, [5])
    again = connect("transformers", policy_model, SETTINGS, run_dir=run_dir, owner=owner[:2])
    assert again.info["pid"] != pid
    assert again.generate(CONVS[:1], SAMPLED, [5])
    again.close()


def test_two_runs_never_share_a_server(policy_model, tmp_path, owner):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    try:
        ca = connect("transformers", policy_model, SETTINGS, run_dir=a, owner=owner[:2])
        cb = connect("transformers", policy_model, SETTINGS, run_dir=b, owner=owner[:2])
        assert ca.info["pid"] != cb.info["pid"]
        [(_, ra)], [(_, rb)] = list_servers(a), list_servers(b)
        assert ra["address"] != rb["address"] and ra["authkey"] != rb["authkey"]
        # a's key does not open b's server
        from multiprocessing import AuthenticationError
        from multiprocessing.connection import Client

        with pytest.raises((AuthenticationError, EOFError, ConnectionError)):
            Client(rb["address"], family="AF_UNIX", authkey=bytes.fromhex(ra["authkey"]))
        assert cb.generate(CONVS[:1], SAMPLED, [5]), "b's server still serves after the refused client"
        ca.close()
        cb.close()
    finally:
        assert stop_servers(a) == 1 and stop_servers(b) == 1


def test_a_failing_on_done_aborts_its_call_only(policy_model, run_dir, owner):
    client = connect("transformers", policy_model, SETTINGS, run_dir=run_dir, owner=owner[:2])

    def on_done(key, text):
        raise KeyError("the job's own bug")

    with pytest.raises(KeyError, match="own bug"):
        stream_generate(client, [(0, CONVS[0], 1), (1, CONVS[1], 2)], SAMPLED, on_done)
    assert client.generate(CONVS[:1], SAMPLED, [5]), "the server serves the next call"
    client.close()


def test_cleanup_removes_dead_records_and_orphans(policy_model, run_dir, owner):
    client = connect("transformers", policy_model, SETTINGS, run_dir=run_dir, owner=owner[:2])
    pid = client.info["pid"]
    client.close()
    os.kill(pid, signal.SIGSTOP)  # a hung server: it cannot notice that its run is gone
    try:
        owner[2].kill()
        owner[2].wait()
        time.sleep(2)
        assert alive(pid)
        assert cleanup(run_dir) == 1
        assert wait_gone(pid, 15)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert list_servers(run_dir) == []


def test_slurm_jobs_use_the_inprocess_engine():
    assert resolve_mode("server", {"SLURM_JOB_ID": "42"}) == "inprocess"
    assert resolve_mode("server", {}) == "server"
    assert resolve_mode(None, {}) == "inprocess"
    with pytest.raises(ValueError, match="engine.mode"):
        resolve_mode("shared", {})


# --- the workflow in server mode ---------------------------------------------------------------------

#: Files of three generating jobs (their .stats.json hold timings: not compared): one rollout shard
#: and one SeaLong shard (the same transformers engine, streaming and batched calls) and the base
#: evaluation (vLLM: config.yaml's eval.backend). The probes are generated through the same calls
#: (test_server_texts_equal_inprocess_and_one_start_serves_many_jobs).
GENERATED = ("results/rollout/*/000.jsonl", "results/sealong/*/000.jsonl", "results/eval/base*/*/preds.jsonl")


def server_copy(tiny_run, dest: Path, patterns=GENERATED) -> tuple[Path, dict[str, bytes]]:
    """A copy of the tiny run with the outputs of ``patterns`` removed; returns it and those files."""
    import shutil

    shutil.copytree(tiny_run, dest, symlinks=True, ignore=shutil.ignore_patterns("longmab-engines", "locks"))
    expected = {}
    for pattern in patterns:
        for f in sorted(dest.glob(pattern)):
            expected[str(f.relative_to(dest))] = f.read_bytes()
            f.unlink()
    assert any("rollout" in k for k in expected)
    return dest, expected


def server_procs(workdir: Path) -> list[int]:
    from longmab.runctl import list_procs

    return [p.pid for p in list_procs() if "longmab.engines.server" in p.argv
            and any(str(workdir) in a for a in p.argv)]


def test_workflow_in_server_mode_writes_the_same_files_with_one_start_per_engine(tiny_run, tmp_path):
    from conftest import run_snakemake

    work, expected = server_copy(tiny_run, tmp_path / "srv")
    # cpu_cores 1: the in-process jobs' thread count (a server's default is every core, whose
    # numerics may differ; bench/README.md, "make run, before and after")
    run_snakemake(work, *expected, "--configfile", "tiny.yaml", "--config", "engine={mode: server, cpu_cores: 1}")
    for rel, data in expected.items():
        assert (work / rel).read_bytes() == data, f"{rel} differs from the in-process engine's"
    logs = "".join(p.read_text() for p in (work / "results" / "logs").rglob("*.log")
                   if p.parts[-3] in ("probe", "rollout", "sealong", "eval") or p.parent.name == "eval")
    starts, connects = logs.count(": started in "), logs.count(": connected in ")
    # tiny.yaml generates with transformers and evaluates with vLLM (config.yaml's eval.backend):
    # two engines of the one model, each started once
    server_logs = list((work / ".snakemake" / "longmab-engines").glob("*.log"))
    assert starts == len(server_logs) == 2, (starts, server_logs)
    for p in server_logs:
        text = p.read_text()
        assert text.count(" engine for ") == 1, f"{p.name}: one engine construction per server"
    jobs = len([k for k in expected if "/eval/" not in k]) + 1  # one eval job covers every benchmark
    assert jobs == 3
    assert connects == jobs - starts, f"the other {jobs - starts} jobs connect to a running server, got {connects}"
    assert server_procs(work) == [] and list_servers(work) == [], "no server outlives the run"


def test_a_killed_server_fails_its_job_and_make_resume_recovers(tiny_run, tmp_path):
    from conftest import BIN, run_snakemake, snakemake_env

    work, expected = server_copy(tiny_run, tmp_path / "kill", ("results/rollout/*/000.jsonl",))
    targets = list(expected)  # one rollout shard
    cmd = [str(BIN / "snakemake"), "--cores", "2", *targets, "--configfile", "tiny.yaml", "--config",
           "engine={mode: server, cpu_cores: 1}"]
    proc = subprocess.Popen(cmd, cwd=work, env=snakemake_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    killed = None
    deadline = time.monotonic() + 900
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        logs = list((work / "results" / "logs" / "rollout").rglob("*.log"))
        servers = list_servers(work)
        if servers and servers[0][1].get("ready") and any(
                re.search(r"engine server \S+ \(pid \d+, .*\): (started|connected) in", p.read_text()) for p in logs):
            rec = servers[0][1]  # a rollout job is connected: kill its engine under it
            os.kill(int(rec["pid"]), signal.SIGKILL)
            killed = int(rec["pid"])
        time.sleep(0.5)
    out, _ = proc.communicate(timeout=900)
    assert killed, "the rollout never connected to a server:\n" + out[-3000:]
    assert proc.returncode != 0
    joblogs = "".join(p.read_text() for p in (work / "results" / "logs" / "rollout").rglob("*.log"))
    assert "stopped answering during this job" in joblogs and "make resume" in joblogs, out[-4000:]
    assert "EngineServerError" in out and "stopped answering" in out
    # make resume: runctl check, unlock, --rerun-incomplete
    check = subprocess.run([sys.executable, "-m", "longmab.cli", "runctl", "check"], cwd=work,
                           env=snakemake_env(), capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    run_snakemake(work, "--unlock", "--configfile", "tiny.yaml")
    run_snakemake(work, "--rerun-incomplete", *targets, "--configfile", "tiny.yaml", "--config", "engine={mode: server, cpu_cores: 1}")
    for rel in targets:
        assert (work / rel).read_bytes() == expected[rel], f"{rel} after resume differs"
    assert server_procs(work) == [] and list_servers(work) == []

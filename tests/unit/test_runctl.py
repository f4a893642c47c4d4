"""Run control (longmab.runctl): finding the processes of a run from /proc, the resume check, stop
requests and the report of a requested stop. Real processes throughout (``exec -a snakemake`` gives a
sleeping process the argv of a Snakemake run)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from longmab import runctl
from longmab.runctl import (
    StopGuard,
    check_resume,
    is_job_process,
    is_snakemake,
    read_proc,
    read_records,
    record_path,
    remove_record,
    request_stop,
    snakemake_procs,
    stop_message,
    summarize_jobs,
    write_record,
)

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def spawn(cwd: Path, argv0: str, *args: str, new_session: bool = True) -> subprocess.Popen:
    """A real process sleeping 60 s whose argv is ``argv0 args...`` (bash ``exec -a``)."""
    cmd = f"exec -a {argv0} sleep 60" if not args else \
        f"exec -a {argv0} {shlex.quote(sys.executable)} -c 'import time; time.sleep(60)' {shlex.join(args)}"
    p = subprocess.Popen(["bash", "-c", cmd], cwd=cwd, start_new_session=new_session)
    deadline = time.time() + 10
    while time.time() < deadline:  # until exec has happened
        info = read_proc(p.pid)
        if info and info.argv and info.argv[0] == argv0:
            return p
        time.sleep(0.02)
    p.kill()
    raise AssertionError("the process did not start")


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.mark.parametrize("argv, want", [
    (["snakemake", "--cores", "2"], True),
    (["/x/.venv/bin/snakemake", "-n"], True),
    (["/usr/bin/python3.11", "/x/.venv/bin/snakemake", "--cores", "2"], True),
    (["python", "-m", "snakemake", "--cores", "1"], True),
    (["python3", "-X", "utf8", "-m", "snakemake"], True),
    (["python", "-c", "import snakemake"], False),
    (["/bin/bash", "-c", ".venv/bin/snakemake --cores 2"], False),  # make's shell: its child is the run
    (["make", "resume"], False),
    (["python", "-m", "longmab.cli", "runctl", "check"], False),
    ([], False),
])
def test_is_snakemake(argv, want):
    assert is_snakemake(argv) is want


def test_is_job_process():
    assert is_job_process(["python", "-m", "snakemake", "--mode", "subprocess", "--target-jobs", "x"])
    assert is_job_process(["snakemake", "--mode=remote"])
    assert not is_job_process(["snakemake", "--cores", "2"])


def test_read_proc_of_this_process():
    me = read_proc(os.getpid())
    assert me.pid == os.getpid() and me.ppid == os.getppid() and me.pgid == os.getpgid(0)
    assert Path(me.cwd) == Path.cwd().resolve() and me.argv and me.start > 0
    assert read_proc(2**22 + 12345) is None  # above pid_max


def test_finds_snakemake_in_its_directory_only(tmp_path, procs):
    here, elsewhere = tmp_path / "wf", tmp_path / "other"
    here.mkdir(), elsewhere.mkdir()
    procs.append(run := spawn(here, "snakemake", "--cores", "2"))
    procs.append(spawn(elsewhere, "snakemake"))
    procs.append(spawn(here, "not-snakemake"))
    found = snakemake_procs(here)
    assert [p.pid for p in found] == [run.pid]
    assert snakemake_procs(tmp_path / "nothing-here") == []


def test_finds_script_jobs_of_the_directory(tmp_path, procs):
    """A `script:` job runs .snakemake/scripts/tmpXXXX.name.py: it counts, wherever its cwd is."""
    wd = tmp_path / "wf"
    (wd / ".snakemake" / "scripts").mkdir(parents=True)
    script = wd / ".snakemake" / "scripts" / "tmpabc.probe.py"
    script.write_text("import time\ntime.sleep(60)\n")
    job = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path)
    procs.append(job)
    deadline = time.time() + 10
    while time.time() < deadline and not snakemake_procs(wd):
        time.sleep(0.05)
    assert [p.pid for p in snakemake_procs(wd)] == [job.pid]


def test_resume_is_safe_when_nothing_runs(tmp_path):
    (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
    (tmp_path / ".snakemake" / "locks" / "0.input.lock").write_text("data/train.jsonl\n")
    result = check_resume(tmp_path)
    assert result.ok and not result.blockers
    assert "a lock is left in .snakemake/locks" in result.message(tmp_path)
    assert "safe to unlock and resume" in result.message(tmp_path)


def test_resume_refuses_while_snakemake_runs(tmp_path, procs):
    procs.append(run := spawn(tmp_path, "snakemake", "--cores", "2"))
    result = check_resume(tmp_path)
    assert not result.ok
    text = result.message(tmp_path)
    assert "NOT safe" in text and f"pid {run.pid}: snakemake" in text and f"kill {run.pid}" in text
    run.kill(), run.wait()
    assert check_resume(tmp_path).ok


def test_resume_refuses_while_a_job_of_a_killed_run_is_left(tmp_path, procs):
    """kill -9 of Snakemake's main process alone leaves its jobs running: they block the resume."""
    leftover = spawn(tmp_path, "job-of-the-run")  # its own process group
    procs.append(leftover)
    path = record_path(tmp_path, pid=999999999)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": runctl._host(), "pid": 999999999, "pgid": os.getpgid(leftover.pid),
                                "start": 1, "started": "then", "argv": ["snakemake"]}))
    result = check_resume(tmp_path)
    assert not result.ok and "a process left by the killed run of pid 999999999" in result.message()
    assert f"kill {leftover.pid}" in result.message()
    leftover.kill(), leftover.wait()
    result = check_resume(tmp_path)
    assert result.ok and result.stale == [path] and "is gone (killed or crashed)" in result.message()


def test_resume_refuses_after_a_run_of_another_host(tmp_path):
    path = record_path(tmp_path, host="node17", pid=4242)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": "node17", "pid": 4242, "pgid": 4242, "start": 5,
                                "started": "2026-01-01 10:00:00", "argv": ["snakemake", "--cores", "8"]}))
    result = check_resume(tmp_path)
    assert not result.ok
    assert "another host (pid 4242 on node17" in result.message() and "ssh node17 ps -p 4242" in result.message()
    assert "FORCE=1" in result.message()
    forced = check_resume(tmp_path, force=True)
    assert forced.ok and "assumed dead" in forced.message()


def test_a_reused_pid_is_not_the_recorded_run(tmp_path, procs):
    other = spawn(tmp_path.parent, "unrelated")
    procs.append(other)
    info = read_proc(other.pid)
    path = record_path(tmp_path, pid=other.pid)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": runctl._host(), "pid": other.pid, "pgid": -1, "start": info.start + 1,
                                "started": "then", "argv": ["snakemake"]}))
    assert check_resume(tmp_path).ok  # same pid, other start time: the recorded run is dead
    path.write_text(json.dumps({"host": runctl._host(), "pid": other.pid, "pgid": -1, "start": info.start,
                                "started": "then", "argv": ["snakemake"]}))
    assert not check_resume(tmp_path).ok  # the recorded run itself, still alive


def test_write_and_remove_record(tmp_path):
    path = write_record(tmp_path, argv=["snakemake", "--cores", "2"])
    assert path == record_path(tmp_path) and path.parent == tmp_path / ".snakemake" / "longmab-runs"
    [(found, rec)] = read_records(tmp_path)
    assert found == path and rec["pid"] == os.getpid() and rec["pgid"] == os.getpgid(0)
    assert rec["start"] == read_proc(os.getpid()).start and rec["argv"] == ["snakemake", "--cores", "2"]
    assert check_resume(tmp_path).ok  # this process is the caller: not a blocker
    remove_record(tmp_path)
    assert read_records(tmp_path) == []
    remove_record(tmp_path)  # no error when gone


def test_request_stop_terminates_the_main_process_only(tmp_path, procs):
    procs.append(main := spawn(tmp_path, "snakemake", "--cores", "2"))
    procs.append(job := spawn(tmp_path, "snakemake", "--mode", "subprocess"))
    stopped = request_stop(tmp_path)
    assert [p.pid for p in stopped] == [main.pid]
    assert main.wait(10) == -signal.SIGTERM
    assert job.poll() is None
    assert request_stop(tmp_path / "elsewhere") == []


def test_cli_check_exit_status(tmp_path, procs):
    cli = [sys.executable, "-m", "longmab.cli", "runctl", "check", "--dir", str(tmp_path)]
    env = dict(os.environ, PYTHONPATH=str(Path(runctl.__file__).parents[1]))
    ok = subprocess.run(cli, check=False, capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "safe to unlock and resume" in ok.stdout
    procs.append(run := spawn(tmp_path, "snakemake"))
    blocked = subprocess.run(cli, check=False, capture_output=True, text=True, env=env)
    assert blocked.returncode == 1 and f"pid {run.pid}" in blocked.stderr


def test_summarize_jobs_groups_by_rule():
    jobs = [("probe", f"results/probe/t/{i:03d}.jsonl") for i in range(5)] + [("all", "")]
    assert summarize_jobs(jobs) == [
        "all",
        "probe x 5: results/probe/t/000.jsonl, results/probe/t/001.jsonl, results/probe/t/002.jsonl (+2 more)",
    ]


def test_stop_message():
    text = stop_message("SIGTERM", "10:00:00", [("probe", "results/probe/t/000.jsonl")], [], [],
                        [("rollout", "results/rollout/t/000.jsonl"), ("all", "")], 143,
                        log=["/w/.snakemake/log/x.log"], command=["snakemake", "--cores", "2"])
    assert text.splitlines()[0] == "Stopped on request (SIGTERM at 10:00:00); the run is not finished. No job failed."
    assert "  finished in this run: 1 job\n    probe: results/probe/t/000.jsonl" in text
    assert "  not started: 2 jobs" in text
    assert "resume with: make resume" in text and "or: snakemake --cores 2 --rerun-incomplete" in text
    assert "log: /w/.snakemake/log/x.log" in text and "exit status 143" in text
    assert "did not complete successfully" not in text


def test_stop_message_with_jobs_that_ended_in_an_error_after_the_signal():
    text = stop_message("SIGTERM", "t", [], [("probe", "p/000.jsonl")], [], [], 143)
    assert "No job failed" not in text
    assert "ended with an error after the signal: 1 job" in text and "a real failure" in text


def test_stop_guard_records_the_signal_and_chains_to_the_previous_handler(tmp_path):
    """arm() wraps the handlers Snakemake installed: the signal is recorded, then passed on."""
    seen = []
    old_term = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    # Python's own SIGINT handler, as in an interactive shell: a process started in the background
    # (`nohup ... &`, some CI runners) inherits SIGINT ignored, and the guard rightly chains to that
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        guard = StopGuard(workflow=object(), workdir=tmp_path)
        guard.arm()
        assert read_records(tmp_path)[0][1]["pid"] == os.getpid()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert seen == [signal.SIGTERM] and guard.signum == signal.SIGTERM and guard.at
        with pytest.raises(KeyboardInterrupt):  # SIGINT still interrupts (Python's default handler)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        assert guard.signum == signal.SIGTERM  # the first signal is the one reported
        guard.success()
        assert read_records(tmp_path) == []
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def test_stop_guard_error_without_a_signal_leaves_the_failure_to_snakemake(tmp_path):
    guard = StopGuard(workflow=object(), workdir=tmp_path)
    write_record(tmp_path)
    assert guard.error(log=None) is None  # no SystemExit: Snakemake reports its failure
    assert read_records(tmp_path) == []

"""Concurrent vLLM CPU engines claim distinct cores (longmab.engines.claim_cpu_cores / bind_vllm_cpu_cores)."""
import os
import subprocess
import sys
import textwrap

from longmab.engines import bind_vllm_cpu_cores, claim_cpu_cores, release_cpu_cores


def test_claims_are_distinct_and_released(tmp_path):
    a, fa = claim_cpu_cores(1, tmp_path, cpus=[0, 1, 2])
    b, fb = claim_cpu_cores(2, tmp_path, cpus=[0, 1, 2])
    c, _ = claim_cpu_cores(1, tmp_path, cpus=[0, 1, 2])
    assert a == [0] and b == [1, 2] and c == []  # flock is per open file: distinct even in one process
    release_cpu_cores(fa)
    d, fd = claim_cpu_cores(1, tmp_path, cpus=[0, 1, 2])
    assert d == [0]
    release_cpu_cores(fb + fd)


def test_claim_dies_with_its_process(tmp_path):
    """A killed job's cores are free at once (the kernel drops the flock): no stale claims."""
    code = textwrap.dedent(f"""
        import sys, time
        from longmab.engines import claim_cpu_cores
        cores, _ = claim_cpu_cores(1, {str(tmp_path)!r}, cpus=[0, 1])
        print(cores, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout.readline().strip() == "[0]"
        cores, fds = claim_cpu_cores(1, tmp_path, cpus=[0, 1])
        assert cores == [1]  # core 0 is held by the other process
        release_cpu_cores(fds)
    finally:
        proc.kill()
        proc.wait()
    cores, fds = claim_cpu_cores(2, tmp_path, cpus=[0, 1])
    assert cores == [0, 1]
    release_cpu_cores(fds)


def test_bind_sets_vllm_env_and_respects_the_users_choice(tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    fds = bind_vllm_cpu_cores(1, tmp_path)
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    # a second engine job on this machine (its own environment) gets the other core
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND")
    fds2 = bind_vllm_cpu_cores(1, tmp_path)
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    # every core taken: vLLM's own binding applies, nothing set
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND")
    assert bind_vllm_cpu_cores(1, tmp_path) == []
    assert "VLLM_CPU_OMP_THREADS_BIND" not in os.environ
    release_cpu_cores(fds + fds2)
    # the user's binding wins: nothing claimed
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "auto")
    assert bind_vllm_cpu_cores(1, tmp_path) == []
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "auto"


def test_an_engine_asked_for_n_cores_always_gets_n_threads(tmp_path, monkeypatch):
    """The thread count is part of the bf16 numerics: a server asking for both cores while another
    engine job holds one still runs two threads (sharing the held core), not one."""
    from longmab.engines.cpu import default_cpu_cores

    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    held, fh = claim_cpu_cores(1, tmp_path)
    assert held == [0]
    fds = bind_vllm_cpu_cores(2, tmp_path)
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0,1" and len(fds) == 1  # core 1 claimed, 0 shared
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND")
    fds2 = bind_vllm_cpu_cores(2, tmp_path)  # every core held: still two threads
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0,1" and fds2 == []
    release_cpu_cores(fh + fds)
    assert default_cpu_cores("inprocess") == 1 and default_cpu_cores("server") == 2

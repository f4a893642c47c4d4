"""vLLM on a CPU: its environment defaults and one core per engine job (``flock``-ed core claims).
No vLLM import here: these run before vLLM is imported."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from . import base

log = logging.getLogger("longmab")

#: Environment defaults for vLLM on CPU (set before vLLM is imported, only when no CUDA device is
#: visible, never over a value already set). VLLM_CPU_OMP_THREADS_BIND is left at vLLM's "auto"
#: (worker on one core, one core reserved): see bench/README.md ("Engines").
VLLM_CPU_ENV_DEFAULTS: dict[str, str] = {
    "VLLM_CPU_KVCACHE_SPACE": "4",
}


def apply_vllm_cpu_env(overrides: dict[str, Any] | None = None, force: bool | None = None) -> dict[str, str]:
    """Set the CPU-only vLLM environment variables (existing values win over defaults; ``overrides``
    win over both). ``force=None`` applies them only when no CUDA device is visible. Returns the
    variables that were set. Must run before ``vllm`` is imported to be sure they take effect."""
    if force is None:
        force = not base._has_cuda()
    if not force:
        return {}
    applied = {}
    for k, v in VLLM_CPU_ENV_DEFAULTS.items():
        if k not in os.environ:
            os.environ[k] = v
            applied[k] = v
    for k, v in (overrides or {}).items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = str(v)
            applied[k] = str(v)
    return applied


def machine_cpus() -> list[int]:
    """The cores this process may run on (its affinity), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def claim_cpu_cores(n: int = 1, lock_dir: str | os.PathLike | None = None,
                    cpus: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """Claim ``n`` CPU cores of this machine for one vLLM CPU engine, distinct from the cores other
    engine jobs hold at the same time.

    vLLM's default binding (``VLLM_CPU_OMP_THREADS_BIND=auto``) puts every instance's worker on the
    same first core: two shard jobs started side by side on a 2-core machine then share core 0 while
    core 1 idles (``bench/roofline.py``, ``vllm-fp32-x2-auto`` vs ``-x2-bound``). Each core is a lock
    file (``longmab-cpu-<core>.lock`` in ``lock_dir``, default the system temp folder, which is per
    machine) held with ``flock`` for the life of the engine, so the kernel releases it whatever way
    the job ends (kill -9 included) and no stale claim survives.

    Returns ``(cores, fds)``: the claimed core ids (fewer than ``n``, possibly none, when the others
    are taken) and the open lock files, to pass to :func:`release_cpu_cores`.
    """
    import fcntl
    import tempfile

    if cpus is None:
        cpus = machine_cpus()
    folder = os.fspath(lock_dir or tempfile.gettempdir())
    cores: list[int] = []
    fds: list[int] = []
    for cpu in cpus:
        if len(cores) >= n:
            break
        try:
            fd = os.open(os.path.join(folder, f"longmab-cpu-{cpu}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        cores.append(cpu)
        fds.append(fd)
    return cores, fds


def release_cpu_cores(fds: Sequence[int]) -> None:
    """Release cores claimed by :func:`claim_cpu_cores`."""
    for fd in fds:
        try:
            os.close(fd)  # closing the only descriptor drops the flock
        except OSError:
            pass


def bind_vllm_cpu_cores(n: int = 1, lock_dir: str | os.PathLike | None = None) -> list[int]:
    """Bind the vLLM CPU engine about to start in this process to ``n`` cores no other engine job
    holds (see :func:`claim_cpu_cores`), via ``VLLM_CPU_OMP_THREADS_BIND`` and
    ``VLLM_CPU_NUM_OF_RESERVED_CPU=0``. Does nothing (returns ``[]``) when the binding is already set
    in the environment (the user's choice wins), when the machine has a single core, or when every
    core is taken (vLLM's own ``auto`` binding then applies). Returns the lock descriptors."""
    if "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return []
    ncpu = len(machine_cpus())
    if ncpu < 2:
        return []
    n = max(1, min(int(n), ncpu))
    cores, fds = claim_cpu_cores(n, lock_dir)
    if not cores and n == 1:
        log.info("vLLM CPU binding: every core is held by another engine job; vLLM's own binding applies")
        return []
    shared: list[int] = []
    if len(cores) < n:
        # The thread count is part of the numerics (bf16 GEMMs split their work by thread): an engine
        # asked for n cores always gets n threads, on free cores first, then sharing held ones.
        shared = [c for c in machine_cpus() if c not in cores][: n - len(cores)]
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in sorted(cores + shared))
    os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    log.info("vLLM CPU binding: core(s) %s (%s)", os.environ["VLLM_CPU_OMP_THREADS_BIND"],
             f"{','.join(map(str, shared))} shared with other engine jobs" if shared else "free of other engine jobs")
    return fds


def default_cpu_cores(mode: str) -> int:
    """Cores (threads) of a vLLM CPU engine when ``engine.cpu_cores`` is null: one per engine job in
    process (concurrent shard jobs each get their own core), every core of this machine (its
    affinity) for a run's shared server (``engine.mode: server``), which serves the jobs in turn."""
    return len(machine_cpus()) if mode == "server" else 1


def parse_core_list(spec: str | None) -> list[int] | None:
    """The cores of a ``VLLM_CPU_OMP_THREADS_BIND`` value such as ``"0"``, ``"0-1"`` or ``"0,2-3"``;
    None for ``auto``, ``nobind``, an empty value or one with several ranks (``|``)."""
    if not spec or spec in ("auto", "nobind") or "|" in spec:
        return None
    cores: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            cores.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        return None
    return cores or None


class ProcessPin:
    """Pin this process to the cores vLLM's spawned worker would have been bound to, for vLLM running
    in this process (engine core and worker in the caller: no spawned processes, issue #22).

    vLLM's multiprocess executor binds its worker's OpenMP threads (``OMP_NUM_THREADS`` = the number of
    bound cores, affinity from ``VLLM_CPU_OMP_THREADS_BIND``); its single-process ("uni") executor
    binds nothing, and torch then runs as many threads as cores, unpinned: other numerics (other
    texts) and, on a shared machine, OpenMP threads fighting other jobs (bench/README.md, Engines).
    Pinning the process to the same cores with the same thread count gives the worker's numerics
    (identical texts, tests/test_engine.py). :meth:`restore` undoes it (affinity, thread count, and
    ``torch.set_num_threads``, which vLLM's CPU worker replaces process-wide with a no-op).
    """

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.set_num_threads = torch.set_num_threads
        self.threads = torch.get_num_threads()
        try:
            self.affinity: set[int] | None = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            self.affinity = None
        cores = parse_core_list(os.environ.get("VLLM_CPU_OMP_THREADS_BIND"))
        if cores and self.affinity is not None:
            os.sched_setaffinity(0, cores)
        # vLLM's "auto" gives the worker one core (the other kept for its engine core process)
        torch.set_num_threads(len(cores) if cores else 1)
        self.cores = cores
        log.info("vLLM in this process: pinned to core(s) %s, %d torch thread(s)",
                 ",".join(map(str, cores)) if cores else "any", torch.get_num_threads())

    def restore(self) -> None:
        torch = self.torch
        torch.set_num_threads = self.set_num_threads
        torch.set_num_threads(self.threads)
        if self.cores and self.affinity is not None:
            try:
                os.sched_setaffinity(0, self.affinity)
            except OSError:  # pragma: no cover - cores went away
                pass

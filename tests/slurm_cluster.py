"""A throw-away one-node SLURM (Debian slurm-wlm + munge) for tests: private munge socket and key,
private ports and state, stopped by PID. Needs root on Linux.

The Snakemake SLURM jobstep drops SLURM_CONF before its inner `srun`, so the config must also be at
/etc/slurm/slurm.conf: an existing file there is backed up and restored. A file lock serializes
clusters of concurrent test sessions on the same machine (they share that path).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
LOCK = Path(tempfile.gettempdir()) / ".longmab-slurm.lock"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")


class SlurmUnavailable(RuntimeError):
    """This machine cannot run SLURM at all (the reason is the message)."""


def ensure_installed(install: bool = True) -> None:
    """Install slurm-wlm and munge with apt-get when missing; raise SlurmUnavailable if impossible."""
    if not sys.platform.startswith("linux"):
        raise SlurmUnavailable("SLURM test cluster needs Linux")
    if all(shutil.which(d) for d in DAEMONS):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable("slurm-wlm/munge missing and not root (cannot apt-get install)")
    if not install or not shutil.which("apt-get"):
        raise SlurmUnavailable("slurm-wlm/munge missing and no apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(cmd)} failed: {proc.stderr[-500:]}")
    missing = [d for d in DAEMONS if not shutil.which(d)]
    if missing:
        raise SlurmUnavailable(f"installed slurm-wlm/munge but {missing} not on PATH")


def _real_memory_mb() -> int:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(1000, min(16000, int(pages / 2**20 * 0.8)))


class SlurmCluster:
    """``with SlurmCluster() as c: subprocess.run(..., env=c.env())``"""

    def __init__(self, ctld_port: int = 16817, slurmd_port: int = 16818, cpus: int | None = None):
        self.ctld_port, self.slurmd_port = ctld_port, slurmd_port
        self.cpus = cpus or os.cpu_count() or 1
        self.dir: Path | None = None
        self.conf: Path | None = None
        self.procs: list[subprocess.Popen] = []
        self._backup: Path | None = None
        self._installed_conf = False
        self._lock = None

    # -- life cycle ---------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        self._lock = open(LOCK, "w")  # noqa: SIM115 (held until stop())
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        # munged wants every directory on its socket path searchable by all: not pytest's 0700 tmp.
        self.dir = Path(tempfile.mkdtemp(prefix="longmab-slurm-"))
        self.dir.chmod(0o755)
        munge = self.dir / "munge"
        munge.mkdir(mode=0o755)
        key = munge / "key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (self.dir / "state").mkdir()
        (self.dir / "spool").mkdir()
        self.conf = self.dir / "slurm.conf"
        self.conf.write_text(self.config_text())
        self._install_system_conf()
        self._spawn(
            "munged",
            "-F",
            f"--socket={munge / 'sock'}",
            f"--key-file={key}",
            f"--pid-file={munge / 'pid'}",
            f"--log-file={munge / 'log'}",
            f"--seed-file={munge / 'seed'}",
        )
        self._wait(lambda: (munge / "sock").exists(), timeout, "munged socket")
        self._spawn("slurmctld", "-D", "-f", str(self.conf))
        self._spawn("slurmd", "-D", "-f", str(self.conf), "-N", "localhost")
        self._wait(self._node_idle, timeout, "the node to be idle (sinfo)")

    def stop(self) -> None:
        for proc in reversed(self.procs):  # slurmd, slurmctld, munged: only what we started
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        if self._installed_conf:
            if self._backup is not None:
                shutil.move(self._backup, SYSTEM_CONF)
            else:
                SYSTEM_CONF.unlink(missing_ok=True)
            self._installed_conf = False
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    # -- helpers ------------------------------------------------------------------------------------
    def config_text(self) -> str:
        d = self.dir
        return "\n".join(
            [
                "ClusterName=longmabtest",
                "SlurmctldHost=localhost",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={d / 'munge' / 'sock'}",
                f"SlurmctldPort={self.ctld_port}",
                f"SlurmdPort={self.slurmd_port}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU",
                "AccountingStorageType=accounting_storage/none",
                "JobAcctGatherType=jobacct_gather/none",
                "MpiDefault=none",
                "ReturnToService=2",
                "MinJobAge=300",  # finished jobs stay visible to squeue (no accounting database)
                f"StateSaveLocation={d / 'state'}",
                f"SlurmdSpoolDir={d / 'spool'}",
                f"SlurmctldPidFile={d / 'slurmctld.pid'}",
                f"SlurmdPidFile={d / 'slurmd.pid'}",
                f"SlurmctldLogFile={d / 'slurmctld.log'}",
                f"SlurmdLogFile={d / 'slurmd.log'}",
                f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={_real_memory_mb()} State=UNKNOWN",
                "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )

    def env(self, base: dict | None = None) -> dict:
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        return env

    def logs(self) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log", "munge/log", "slurmctld.out", "slurmd.out", "munged.out"):
            path = self.dir / name if self.dir else None
            if path and path.exists():
                out.append(f"--- {name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def _install_system_conf(self) -> None:
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        if SYSTEM_CONF.exists():
            self._backup = self.dir / "etc-slurm.conf.backup"
            shutil.copy2(SYSTEM_CONF, self._backup)
        self._installed_conf = True
        shutil.copy2(self.conf, SYSTEM_CONF)

    def _spawn(self, *cmd: str) -> None:
        with open(self.dir / f"{cmd[0]}.out", "w") as log:  # the daemon keeps its own descriptor
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env()))

    def _node_idle(self) -> bool:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env(), capture_output=True, text=True, check=False)
        return proc.returncode == 0 and proc.stdout.strip() == "idle"

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead} exited while waiting for {what}\n{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout} s waiting for {what}\n{self.logs()}")

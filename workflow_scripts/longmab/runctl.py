"""Run control: resuming safely after a crash, stopping on request, and saying honestly what happened.

Snakemake (9.27) leaves two things behind when its process dies (``kill -9``, a power loss, the OOM
killer): a lock (``.snakemake/locks/``: the next run stops with ``LockException`` until ``snakemake
--unlock``) and the outputs of the jobs that were running, marked incomplete (the next run stops with
``IncompleteFilesException`` unless ``--rerun-incomplete``). Unlocking is only safe when no other
Snakemake process still works in the directory, which Snakemake cannot tell (its lock files name no
process). This module can:

- :func:`check_resume` finds what would make a resume unsafe: a live Snakemake process whose working
  directory is this one (its main process or a job's), leftover job processes of a killed run (same
  process group, same directory), and runs recorded by another host (a shared file system).
  ``make resume`` = ``longmab runctl check``, ``snakemake --unlock``, ``snakemake --rerun-incomplete``.
- :class:`StopGuard` (armed from the Snakefile's ``onstart:``) records each run in
  ``.snakemake/longmab-runs/<host>-<pid>.json`` and the stop signals it receives. Snakemake ends a
  requested stop as if a job had failed ("At least one job did not complete successfully", exit 1);
  with the guard, ``onerror:`` prints what really happened (which jobs finished, which were
  interrupted, that none failed, how to resume) and exits with ``128 + signal`` (143 for SIGTERM,
  130 for SIGINT): the run did not finish, and nothing failed.
- :func:`request_stop` sends SIGTERM to the Snakemake main process of a directory (``make stop``):
  running jobs finish, nothing new starts.

Linux only (processes are read from ``/proc``). No Snakemake import: :class:`StopGuard` reads the
``workflow`` object it is given by attribute (``workflow.dag``, ``workflow.scheduler``).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where the run records are kept, relative to the working directory.
RECORD_DIR = Path(".snakemake") / "longmab-runs"
#: The one documented command that resumes a stopped or crashed run.
RESUME_COMMAND = "make resume"
PROC = Path("/proc")


# --------------------------------------------------------------------------------------------------
# Processes


@dataclass(frozen=True)
class Proc:
    """One process, as read from ``/proc/<pid>``.

    Attributes
    ----------
    pid, ppid, pgid : int
        Process, parent and process-group ids.
    start : int
        Start time in clock ticks since boot (``/proc/<pid>/stat`` field 22): with ``pid`` it
        identifies a process even after its pid is reused.
    argv : tuple of str
    cwd : str or None
        Resolved working directory (None when it cannot be read).
    """

    pid: int
    ppid: int
    pgid: int
    start: int
    argv: tuple[str, ...]
    cwd: str | None


def read_proc(pid: int, proc_root: Path = PROC) -> Proc | None:
    """The process ``pid``, or None when it is gone (or unreadable)."""
    base = proc_root / str(pid)
    try:
        stat = (base / "stat").read_text()
        raw = (base / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    # comm (field 2) is parenthesised and may contain spaces: split after the last ')'.
    rest = stat[stat.rfind(")") + 2 :].split()
    try:
        ppid, pgid, start = int(rest[1]), int(rest[2]), int(rest[19])
    except (IndexError, ValueError):
        return None
    try:
        cwd = os.readlink(base / "cwd")
    except OSError:
        cwd = None
    argv = tuple(a.decode("utf-8", "replace") for a in raw.split(b"\0") if a)
    return Proc(pid, ppid, pgid, start, argv, cwd)


def list_procs(proc_root: Path = PROC) -> list[Proc]:
    """Every readable process (empty when ``/proc`` is absent)."""
    if not proc_root.is_dir():
        return []
    out = []
    for entry in proc_root.iterdir():
        if entry.name.isdigit():
            p = read_proc(int(entry.name), proc_root)
            if p is not None:
                out.append(p)
    return out


def is_snakemake(argv: Sequence[str]) -> bool:
    """True for ``snakemake ...``, ``python [opts] /path/bin/snakemake ...`` and ``python -m snakemake``."""
    if not argv:
        return False
    name = os.path.basename(argv[0])
    if name == "snakemake":
        return True
    if not name.startswith("python"):
        return False
    args = list(argv[1:])
    while args:
        a = args.pop(0)
        if a == "-m":
            return bool(args) and args[0] in ("snakemake", "snakemake.__main__")
        if a in ("-c",):
            return False
        if a in ("-X", "-W"):  # options with a separate value
            args = args[1:]
            continue
        if a.startswith("-"):
            continue
        return os.path.basename(a) == "snakemake"
    return False


def is_job_process(argv: Sequence[str]) -> bool:
    """A Snakemake process that runs jobs for a main process (``--mode subprocess`` / ``remote``)."""
    argv = list(argv)
    for i, a in enumerate(argv):
        if a == "--mode" and i + 1 < len(argv) and argv[i + 1] in ("subprocess", "remote"):
            return True
        if a in ("--mode=subprocess", "--mode=remote"):
            return True
    return False


def _same_dir(cwd: str | None, workdir: Path) -> bool:
    if cwd is None:
        return False
    cwd = cwd.removesuffix(" (deleted)")
    try:
        return Path(cwd).resolve() == workdir
    except OSError:
        return False


def _ancestors(pid: int, procs: dict[int, Proc]) -> set[int]:
    """``pid`` and its ancestors (the caller: make, its shell...)."""
    out = set()
    while pid and pid not in out:
        out.add(pid)
        p = procs.get(pid)
        if p is None:
            break
        pid = p.ppid
    return out


def _describe(p: Proc, width: int = 160) -> str:
    text = shlex.join(p.argv) if p.argv else "?"
    return f"pid {p.pid}: {text[:width]}{'...' if len(text) > width else ''}"


def snakemake_procs(workdir: str | os.PathLike, procs: Iterable[Proc] | None = None,
                    me: int | None = None) -> list[Proc]:
    """Live processes that work for a Snakemake run in ``workdir``.

    Snakemake processes whose working directory is ``workdir`` (``--directory`` changes it before
    any job), and processes that run a script of this directory's ``.snakemake/scripts/`` (the
    ``script:`` jobs). The calling process and its ancestors are left out.
    """
    workdir = Path(workdir).resolve()
    table = {p.pid: p for p in (procs if procs is not None else list_procs())}
    mine = _ancestors(os.getpid() if me is None else me, table)
    scripts = str(workdir / ".snakemake" / "scripts") + os.sep
    out = []
    for p in table.values():
        if p.pid in mine:
            continue
        in_dir = _same_dir(p.cwd, workdir)
        runs_script = any(a.startswith(scripts) or (in_dir and a.startswith(".snakemake/scripts/")) for a in p.argv)
        if (is_snakemake(p.argv) and in_dir) or runs_script:
            out.append(p)
    return sorted(out, key=lambda p: p.pid)


# --------------------------------------------------------------------------------------------------
# Run records


def _host() -> str:
    return socket.gethostname()


def record_path(workdir: str | os.PathLike, host: str | None = None, pid: int | None = None) -> Path:
    return Path(workdir) / RECORD_DIR / f"{host or _host()}-{pid or os.getpid()}.json"


def write_record(workdir: str | os.PathLike = ".", argv: Sequence[str] | None = None) -> Path:
    """Record that this process runs Snakemake in ``workdir`` (host, pid, process group, start time,
    command); returns the record's path. Written atomically."""
    me = read_proc(os.getpid())
    record = {
        "host": _host(),
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "start": me.start if me else None,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "argv": list(sys.argv if argv is None else argv),
        "workdir": str(Path(workdir).resolve()),
    }
    path = record_path(workdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_records(workdir: str | os.PathLike) -> list[tuple[Path, dict]]:
    """``(path, record)`` of every run record in ``workdir`` (unreadable ones as ``{}``)."""
    folder = Path(workdir) / RECORD_DIR
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            out.append((path, {}))
    return out


def remove_record(workdir: str | os.PathLike = ".") -> None:
    """Remove this process's run record (no error when there is none)."""
    try:
        record_path(workdir).unlink()
    except FileNotFoundError:
        pass


def _alive(record: dict, table: dict[int, Proc]) -> bool:
    p = table.get(int(record.get("pid") or 0))
    if p is None:
        return False
    return record.get("start") is None or p.start == record["start"]


# --------------------------------------------------------------------------------------------------
# Resume check


@dataclass
class ResumeCheck:
    """Whether ``snakemake --unlock`` and ``--rerun-incomplete`` are safe now.

    Attributes
    ----------
    ok : bool
    blockers : list of str
        Why not (each names the process, or the host and pid of the other run).
    notes : list of str
        What was found and is harmless (a stale lock, a dead run's record).
    stale : list of Path
        Records of dead runs on this host (``longmab runctl check`` removes them when ``ok``).
    """

    ok: bool = True
    blockers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stale: list[Path] = field(default_factory=list)

    def message(self, workdir: str | os.PathLike = ".") -> str:
        lines = []
        if self.ok:
            lines.append(f"resume check: no Snakemake process is running in {Path(workdir).resolve()}; "
                         "safe to unlock and resume")
        else:
            lines.append(f"resume check: NOT safe to resume in {Path(workdir).resolve()}:")
        lines += [f"  - {b}" for b in self.blockers]
        lines += [f"  ({n})" for n in self.notes]
        return "\n".join(lines)


def check_resume(workdir: str | os.PathLike = ".", force: bool = False, procs: Iterable[Proc] | None = None,
                 host: str | None = None, me: int | None = None) -> ResumeCheck:
    """What stands in the way of resuming the Snakemake run in ``workdir``.

    Blocks on (1) a live Snakemake process or ``script:`` job of this directory (another run, or the
    jobs of a run whose main process was killed alone), (2) live processes in the process group of a
    dead recorded run that still work in this directory, (3) a run recorded by another host that did
    not end cleanly: its processes cannot be seen from here (``force`` accepts it, for when that host
    is known to be dead). Without ``/proc`` nothing can be checked: blocks unless ``force``.
    """
    workdir = Path(workdir).resolve()
    host = host or _host()
    result = ResumeCheck()
    if procs is None and not PROC.is_dir():
        if not force:
            result.ok = False
            result.blockers.append("cannot list processes (no /proc): make sure no Snakemake runs here, "
                                   "then resume with FORCE=1")
        return result
    table = {p.pid: p for p in (procs if procs is not None else list_procs())}
    mine = _ancestors(os.getpid() if me is None else me, table)
    for p in snakemake_procs(workdir, table.values(), me=me):
        kind = "a job of a Snakemake run" if (is_job_process(p.argv) or not is_snakemake(p.argv)) else "Snakemake"
        result.blockers.append(f"{kind} is still running here ({_describe(p)}); wait for it to end, or stop "
                               f"it (make stop, or kill {p.pid})")
    seen = {p.pid for p in snakemake_procs(workdir, table.values(), me=me)}
    for path, rec in read_records(workdir):
        if not rec:
            result.notes.append(f"unreadable run record {path} ignored")
            continue
        where = f"pid {rec.get('pid')} on {rec.get('host')}, started {rec.get('started')}"
        if rec.get("host") != host:
            if force:
                result.notes.append(f"run of {where} did not end cleanly; FORCE=1: assumed dead")
            else:
                result.blockers.append(
                    f"a run was started on another host ({where}: {shlex.join(rec.get('argv') or [])}) and did "
                    f"not end cleanly; if it still runs there, resuming here would run its jobs twice. Check "
                    f"that it is gone (ssh {rec.get('host')} ps -p {rec.get('pid')}), then resume with FORCE=1")
            continue
        if _alive(rec, table):
            if int(rec["pid"]) not in seen and int(rec["pid"]) not in mine:
                result.blockers.append(f"the run of {where} is still alive ({_describe(table[int(rec['pid'])])})")
            continue
        left = [p for p in table.values()
                if p.pgid == rec.get("pgid") and p.pid not in mine and p.pid not in seen and _same_dir(p.cwd, workdir)]
        for p in left:
            result.blockers.append(f"a process left by the killed run of {where} still works here "
                                   f"({_describe(p)}); wait for it or kill {p.pid}")
        result.notes.append(f"the run of {where} is gone (killed or crashed)")
        result.stale.append(path)
    if (workdir / ".snakemake" / "locks").is_dir() and any((workdir / ".snakemake" / "locks").iterdir()):
        result.notes.append("a lock is left in .snakemake/locks (removed by snakemake --unlock)")
    result.ok = not result.blockers
    return result


# --------------------------------------------------------------------------------------------------
# Stop on request


def request_stop(workdir: str | os.PathLike = ".", sig: int = signal.SIGTERM,
                 procs: Iterable[Proc] | None = None) -> list[Proc]:
    """Send ``sig`` to every Snakemake main process working in ``workdir``; return them.

    SIGTERM (the default) asks Snakemake to finish the running jobs and start no new one.
    """
    targets = [p for p in snakemake_procs(workdir, procs) if is_snakemake(p.argv) and not is_job_process(p.argv)]
    for p in targets:
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
    return targets


def _logs(log: Any) -> list[str]:
    """Snakemake passes ``log`` as a path or (9.x) a list of paths."""
    if not log:
        return []
    return [str(x) for x in log] if isinstance(log, (list, tuple)) else [str(log)]


def _job_label(job: Any) -> tuple[str, str]:
    """``(rule name, first output or wildcards)`` of a Snakemake job (read by attribute)."""
    rule = getattr(getattr(job, "rule", None), "name", None) or str(job)
    outputs = list(getattr(job, "output", []) or [])
    return rule, (str(outputs[0]) if outputs else "")


def summarize_jobs(labels: Iterable[tuple[str, str]], examples: int = 3) -> list[str]:
    """One line per rule: ``probe x 3: results/probe/a/000.jsonl, ... (+1 more)`` (sorted)."""
    by_rule: dict[str, list[str]] = {}
    for rule, out in labels:
        by_rule.setdefault(rule, []).append(out)
    lines = []
    for rule in sorted(by_rule):
        outs = sorted(o for o in by_rule[rule] if o)
        shown = ", ".join(outs[:examples])
        more = f" (+{len(outs) - examples} more)" if len(outs) > examples else ""
        count = f" x {len(by_rule[rule])}" if len(by_rule[rule]) > 1 else ""
        lines.append(f"{rule}{count}{': ' + shown + more if shown else ''}")
    return lines


def stop_message(signame: str, at: str, finished: Sequence[tuple[str, str]], errored: Sequence[tuple[str, str]],
                 unrecorded: Sequence[tuple[str, str]], not_started: Sequence[tuple[str, str]], exit_code: int,
                 log: str | Sequence[str] | None = None, command: Sequence[str] | None = None) -> str:
    """The report of a requested stop (see :class:`StopGuard`).

    Parameters
    ----------
    signame : str
        ``"SIGTERM"`` or ``"SIGINT"``.
    at : str
        When the signal came (``HH:MM:SS``).
    finished, errored, unrecorded, not_started : sequence of (rule, first output)
        Jobs that finished in this run; that ended with an error *after* the signal; that were still
        running when Snakemake gave up on them (SIGINT); that never started.
    exit_code : int
        The exit status the run ends with (``128 + signal``).
    log : path or list of paths, optional
    command : sequence of str, optional
        The Snakemake command line, for the equivalent resume command.
    """

    def block(title: str, jobs: Sequence[tuple[str, str]], note: str = "") -> list[str]:
        lines = [f"  {title}: {len(jobs)} job{'s' if len(jobs) != 1 else ''}{note if jobs else ''}"]
        lines += [f"    {line}" for line in summarize_jobs(jobs)]
        return lines

    head = f"Stopped on request ({signame} at {at}); the run is not finished."
    lines = [head + (" No job failed." if not errored else "")]
    lines += block("finished in this run", finished)
    if errored:
        lines += block("ended with an error after the signal", errored,
                       f" (a {signame} sent to the whole process group, as Ctrl-C, kill -- -PGID or a cluster's "
                       "job cancel do, stops the jobs too; if it was sent to Snakemake alone, this is a real "
                       "failure: see the job's log)")
    if unrecorded:
        lines += block("running at the stop, not recorded as done", unrecorded,
                       " (SIGINT cancels running jobs: their outputs count as incomplete and are made again "
                       "on resume)")
    lines += block("not started", not_started)
    lines.append(f"  resume with: {RESUME_COMMAND}   (pass the same SNAKEMAKE_ARGS / CORES as the run)")
    if command:
        lines.append(f"          or: {shlex.join(list(command))} --rerun-incomplete")
    if log:
        lines.append(f"  log: {', '.join(_logs(log))}")
    lines.append(f"  exit status {exit_code} (128 + {signame}): stopped before the end on request")
    return "\n".join(lines)


class StopGuard:
    """Honest ends for requested stops, wired from the Snakefile::

        from longmab.runctl import StopGuard

        STOP = StopGuard(workflow)

        onstart:
            STOP.arm()

        onsuccess:
            STOP.success()

        onerror:
            STOP.error(log)

    ``arm`` (Snakemake's ``onstart``, called after its scheduler installed its own SIGTERM handler)
    writes this run's record and wraps the SIGTERM and SIGINT handlers: each records the signal and
    the jobs that had failed by then, then calls Snakemake's handler (SIGTERM: finish the running
    jobs, start no new one; SIGINT: cancel them). ``error`` (``onerror``) does nothing after a real
    failure (Snakemake reports it); after a requested stop with no job failed before it, it prints
    :func:`stop_message` (also appended to the run's log) and exits with ``128 + signal``, so
    Snakemake's "At least one job did not complete successfully" is not printed. The lock is
    released either way (Snakemake's ``finally``).

    Parameters
    ----------
    workflow : snakemake.workflow.Workflow
        Read by attribute only: ``dag.finished_jobs``, ``dag.needrun_jobs()``, ``scheduler.failed``,
        ``scheduler.running``.
    workdir : path
        Where the run record goes (default: the current directory, Snakemake's working directory).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, workflow: Any, workdir: str | os.PathLike = "."):
        self.workflow = workflow
        self.workdir = Path(workdir)
        self.signum: int | None = None
        self.at: str | None = None
        self.failed_before: set = set()
        self._previous: dict[int, Any] = {}

    # -- hooks -----------------------------------------------------------------------------------
    def arm(self) -> None:
        try:
            write_record(self.workdir)
        except OSError as exc:  # never block a run for its record
            print(f"longmab: could not write the run record: {exc}", file=sys.stderr)
        self._engines("cleanup")  # servers left by a run that is gone (engine.mode server)
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def success(self) -> None:
        remove_record(self.workdir)
        self._engines("stop")

    def error(self, log: str | None = None) -> None:
        remove_record(self.workdir)
        self._engines("stop")
        if self.signum is None:
            return
        report = self.report(log)
        if report is None:
            return
        text, code = report
        print("\n" + text, file=sys.stderr, flush=True)
        for path in _logs(log):
            try:
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write("\n" + text + "\n")
            except OSError:
                pass
        raise SystemExit(code)

    # -- internals -------------------------------------------------------------------------------
    def _engines(self, action: str) -> None:
        """Stop this run's engine servers (``stop``: the run ends) or the servers of runs that are
        gone (``cleanup``: a run starts). Never fails the run."""
        try:
            from .engines.server import cleanup, stop_servers

            n = stop_servers(self.workdir) if action == "stop" else cleanup(self.workdir)
            if n:
                print(f"longmab: {'stopped' if action == 'stop' else 'cleaned up'} {n} engine server(s)",
                      file=sys.stderr)
        except Exception as exc:  # noqa: BLE001
            print(f"longmab: engine servers ({action}): {exc}", file=sys.stderr)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            self.at = time.strftime("%H:%M:%S")
            scheduler = getattr(self.workflow, "scheduler", None)
            self.failed_before = set(getattr(scheduler, "failed", ()) or ())
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def report(self, log: str | None = None) -> tuple[str, int] | None:
        """``(message, exit code)`` after a requested stop; None when a job failed before it (a real
        failure: Snakemake's own report stands)."""
        if self.signum is None or self.failed_before:
            return None
        dag = self.workflow.dag
        scheduler = getattr(self.workflow, "scheduler", None)
        failed = set(getattr(scheduler, "failed", ()) or ())
        running = set(getattr(scheduler, "running", ()) or ())
        finished = [j for j in dag.finished_jobs]
        not_started = [j for j in dag.needrun_jobs() if j not in failed and j not in running]
        name = signal.Signals(self.signum).name
        code = 128 + self.signum
        text = stop_message(name, self.at or "?", [_job_label(j) for j in finished],
                            [_job_label(j) for j in failed], [_job_label(j) for j in running],
                            [_job_label(j) for j in not_started], code, log, command=sys.argv)
        return text, code

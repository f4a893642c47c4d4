"""One engine per model for the jobs of a run: a per-run engine server and its client (issue #22).

``engine.mode: server`` makes every generating job (probe, rollout, SeaLong, eval) of a local run a
client of one engine process per (model, engine settings), started by the first job that needs it
and shared by the later ones, instead of each job starting its own engine (~12 s for vLLM on a CPU).

The server (``python -m longmab.engines.server RECORD``) holds the same in-process engine a job would
make (:func:`~longmab.engines.factory.make_engine`) and serves one call at a time: a ``generate`` or
``generate_stream`` call of a client runs exactly as it would in the client's process, alone in the
engine, so its texts are identical to the in-process engine's (tests/test_engine_server.py). Calls of
concurrent jobs wait for each other.

Where it lives and who may use it:

- Each server has a record ``.snakemake/longmab-engines/<key>.json`` in the run's working directory
  (``key`` = hash of the backend, the model's resolved path and file fingerprint, and the engine
  settings) with its pid, its Unix socket (Linux abstract namespace, named from the directory and the
  key: two runs in two folders never meet) and a random authentication key (the file is 0600: a
  process that cannot read the run's folder cannot use its engine). A server is reused only by a job
  whose key is the same: same model files, same settings.
- Its **owners** are the Snakemake processes of the run (the outermost ``snakemake`` ancestor of each
  client job; the client itself when there is none). The server exits within a second or two when
  every owner is gone and no client is connected: after success, failure, Ctrl-C, ``make stop`` and
  ``kill -9`` of Snakemake alike. The Snakefile also stops the run's servers in ``onsuccess`` /
  ``onerror`` and removes dead ones in ``onstart`` (:func:`cleanup`), as does ``make resume``.
- A server that dies during a job fails that job with :class:`EngineServerError` naming its log;
  ``make resume`` re-runs the job, which starts a new server.

SLURM jobs run on their own nodes: they always use the in-process engine (:func:`resolve_mode`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from .base import (
    Conversation,
    OnDone,
    SamplingConfig,
    StreamRequest,
    _check_args,
    _log_call,
)

log = logging.getLogger("longmab")

#: Where the server records live, relative to the run's working directory.
SERVER_DIR = Path(".snakemake") / "longmab-engines"
#: Seconds a job waits for a server to start (a cold vLLM start with a large model takes minutes).
START_TIMEOUT = float(os.environ.get("LONGMAB_ENGINE_START_TIMEOUT", "1800"))
#: Seconds between two checks of the owners.
WATCH_INTERVAL = 1.0
#: A server with no client and no live owner for this long exits (owners are checked every second;
#: this only covers a server whose owners cannot be seen).
IDLE_TIMEOUT = float(os.environ.get("LONGMAB_ENGINE_IDLE_TIMEOUT", "3600"))
MODES = ("inprocess", "server")


class EngineServerError(RuntimeError):
    """The engine server of this job failed to start, or died."""


# --------------------------------------------------------------------------------------------------
# Identity


def resolve_mode(mode: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``inprocess`` or ``server`` for the job running now: ``engine.mode`` (default ``inprocess``),
    except that a SLURM job (``SLURM_JOB_ID`` set) always uses the in-process engine: jobs of a SLURM
    run are spread over nodes, and a server there would be shared by nothing."""
    env = os.environ if environ is None else environ
    mode = mode or "inprocess"
    if mode not in MODES:
        raise ValueError(f"engine.mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "server" and env.get("SLURM_JOB_ID"):
        log.info("engine.mode server: this is SLURM job %s, the engine runs in the job", env["SLURM_JOB_ID"])
        return "inprocess"
    return mode


def model_fingerprint(path: str | os.PathLike) -> list:
    """Name, size and modification time of the model's files (a folder's top level): a rebuilt
    model at the same path is another model."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    out = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append([f.name, st.st_size, st.st_mtime_ns])
    return out


def server_key(backend: str, model: str, settings: Mapping[str, Any]) -> tuple[str, dict]:
    """The key of the server for ``model`` (a local path) with these engine ``settings``, and the
    description it is the hash of."""
    real = os.path.realpath(model)
    desc = {"backend": backend, "model": real, "files": model_fingerprint(real),
            "settings": json.loads(json.dumps(dict(settings), sort_keys=True, default=str))}
    digest = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]
    return digest, desc


def _address(run_dir: Path, key: str) -> str:
    h = hashlib.sha256(f"{os.getuid()}:{run_dir.resolve()}:{key}".encode()).hexdigest()[:24]
    return "\0longmab-engine-" + h  # Linux abstract namespace: no socket file, no path length limit


def _proc_start(pid: int) -> int | None:
    """Start time (clock ticks since boot) of the live process ``pid``; None when it is gone or a
    zombie (a server started by this process that exited and was not reaped yet)."""
    from ..runctl import read_proc

    p = read_proc(pid)
    if p is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rfind(")") + 2 :].startswith("Z"):
            return None
    except OSError:
        return None
    return p.start


def find_owner(pid: int | None = None) -> tuple[int, int]:
    """``(pid, start)`` of the outermost Snakemake ancestor of ``pid`` (default this process), or of
    ``pid`` itself when it has none."""
    from ..runctl import is_snakemake, read_proc

    pid = os.getpid() if pid is None else pid
    me = read_proc(pid)
    owner = me
    cur = me
    seen = 0
    while cur is not None and cur.ppid > 1 and seen < 64:
        cur = read_proc(cur.ppid)
        seen += 1
        if cur is not None and is_snakemake(cur.argv):
            owner = cur
    if owner is None:  # no /proc
        return pid, 0
    return owner.pid, owner.start


def owner_alive(owner: Sequence[int]) -> bool:
    pid, start = int(owner[0]), int(owner[1])
    st = _proc_start(pid)
    return st is not None and (start == 0 or st == start)


# --------------------------------------------------------------------------------------------------
# Records


def server_dir(run_dir: str | os.PathLike = ".") -> Path:
    return Path(run_dir) / SERVER_DIR


def _write_record(path: Path, rec: dict) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(rec, f, indent=1)
    os.replace(tmp, path)


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def list_servers(run_dir: str | os.PathLike = ".") -> list[tuple[Path, dict]]:
    d = server_dir(run_dir)
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob("*.json")):
        rec = _read_record(p)
        if rec is not None:
            out.append((p, rec))
    return out


def _server_alive(rec: dict) -> bool:
    pid = rec.get("pid")
    if not pid:
        return False
    st = _proc_start(int(pid))
    return st is not None and st == rec.get("pid_start", st)


def _kill(rec: dict, grace: float = 10.0) -> None:
    """Stop the server of ``rec`` (SIGTERM, then SIGKILL after ``grace`` seconds)."""
    if not _server_alive(rec):
        return
    pid = int(rec["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _server_alive(rec):
        time.sleep(0.1)
    if _server_alive(rec):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop_servers(run_dir: str | os.PathLike = ".", grace: float = 10.0) -> int:
    """Stop every engine server of the run in ``run_dir`` and remove their records; returns how many
    were running."""
    n = 0
    for path, rec in list_servers(run_dir):
        if _server_alive(rec):
            n += 1
            _kill(rec, grace)
        path.unlink(missing_ok=True)
    return n


def cleanup(run_dir: str | os.PathLike = ".") -> int:
    """Remove the records of dead servers and stop live servers whose owners are all gone (a server
    normally exits by itself then; this catches one that hangs). Returns how many were stopped."""
    n = 0
    for path, rec in list_servers(run_dir):
        if not _server_alive(rec):
            path.unlink(missing_ok=True)
            continue
        if not any(owner_alive(o) for o in rec.get("owners", [])):
            log.info("engine server %s (pid %s): its run is gone, stopping it", path.stem, rec.get("pid"))
            _kill(rec)
            path.unlink(missing_ok=True)
            n += 1
    return n


# --------------------------------------------------------------------------------------------------
# Client


class EngineClient:
    """A job's view of a shared engine: the :class:`~longmab.engines.base.Engine` interface over a
    connection to the server (``generate``, ``generate_stream``, ``count_tokens``, ``tokenizer``,
    ``chat_template``). ``close`` disconnects; the server stays for the next job."""

    chat_template: str | None = None
    adapter: str | None = None  # set_adapter: sent with every call

    def __init__(self, conn: Connection, info: dict, model: str, record: Path) -> None:
        self.conn = conn
        self.info = info
        self.record = record
        self.name = f"{info.get('engine', 'engine')} server"
        self.model = model
        self._tokenizer = None
        self.start_seconds = 0.0
        self.last_stats: dict = {}
        self.serves_adapters = bool(info.get("serves_adapters"))

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model)
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def _died(self, exc: BaseException) -> EngineServerError:
        msg = (f"the engine server for {self.model} (pid {self.info.get('pid')}) stopped answering during "
               f"this job ({type(exc).__name__}); its log: {self.info.get('log')}. `make resume` re-runs "
               "this job and starts a new server.")
        log.error(msg)  # in the job's log too, not only in Snakemake's output
        return EngineServerError(msg)

    def _send(self, msg: tuple) -> None:
        try:
            self.conn.send(msg)
        except (OSError, EOFError) as exc:
            raise self._died(exc) from exc

    def _recv(self) -> tuple:
        try:
            msg = self.conn.recv()
        except (OSError, EOFError) as exc:
            raise self._died(exc) from exc
        if msg[0] == "error":
            _, kind, text = msg
            raise (ValueError if kind == "ValueError" else RuntimeError)(f"engine server: {text}")
        return msg

    def generate(self, conversations: Sequence[Conversation], sampling: SamplingConfig,
                 seeds: Sequence[int]) -> list[str]:
        _check_args(conversations, seeds)
        if not conversations:
            return []
        self._send(("generate", [list(c) for c in conversations], dataclasses.asdict(sampling),
                    [int(s) for s in seeds], self.chat_template, self.adapter))
        _, texts, stats = self._recv()
        self.last_stats = stats
        _log_call(self.name, len(texts), stats.get("prompt_tokens", 0), stats.get("generated_tokens", 0),
                  stats.get("seconds", 0.0))
        return texts

    def generate_stream(self, requests: Iterable[StreamRequest], sampling: SamplingConfig,
                        on_done: OnDone) -> dict:
        """See :func:`~longmab.engines.base.stream_generate`. Keys stay in this process: the server
        sees numbers. If ``on_done`` raises, the server aborts this call's requests."""
        keys: dict[int, Any] = {}

        def wire(batch) -> list:
            out = []
            for key, conv, seed in batch or ():
                i = len(keys)
                keys[i] = key
                out.append((i, list(conv), int(seed)))
            return out

        self._send(("stream", wire(requests), dataclasses.asdict(sampling), self.chat_template, self.adapter))
        while True:
            msg = self._recv()
            if msg[0] == "end":
                stats = msg[1]
                self.last_stats = {k: stats[k] for k in ("prompt_tokens", "generated_tokens", "seconds")}
                return stats
            _, i, text = msg  # ("done", i, text)
            try:
                more = wire(on_done(keys[i], text))
            except BaseException as exc:
                self._send(("abort", repr(exc)))
                with contextlib.suppress(EngineServerError):
                    self._recv()  # the server's "end" after the abort
                raise
            self._send(("more", more))

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError, EOFError):
                self.conn.send(("bye",))
            with contextlib.suppress(OSError):
                self.conn.close()
            self.conn = None


def _connect(rec: dict, owner: tuple[int, int], timeout: float = 10.0) -> tuple[Connection, dict]:
    conn = Client(rec["address"], family="AF_UNIX", authkey=bytes.fromhex(rec["authkey"]))
    conn.send(("hello", rec["key"], list(owner)))
    if not conn.poll(timeout):
        conn.close()
        raise EngineServerError("the engine server did not answer")
    msg = conn.recv()
    if msg[0] != "ok":
        conn.close()
        raise EngineServerError(f"the engine server refused this job: {msg[1:]}")
    return conn, msg[1]


@contextlib.contextmanager
def _locked(path: Path, timeout: float):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise EngineServerError(f"waited {timeout:.0f} s for {path} (another job starting the "
                                            "same engine)") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # drops the lock


def connect(backend: str, model: str, settings: Mapping[str, Any], run_dir: str | os.PathLike = ".",
            owner: tuple[int, int] | None = None, start_timeout: float | None = None) -> EngineClient:
    """A client of the run's server for ``model`` with these engine ``settings`` (the keyword
    arguments of :func:`~longmab.engines.factory.make_engine`), starting the server when there is
    none (or only a dead one, or one that does not answer: stopped and replaced)."""
    t0 = time.perf_counter()
    start_timeout = START_TIMEOUT if start_timeout is None else start_timeout
    run_dir = Path(run_dir)
    key, desc = server_key(backend, model, settings)
    d = server_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{key}.json"
    owner = tuple(owner or find_owner())
    with _locked(d / f"{key}.lock", start_timeout):
        rec = _read_record(path)
        if rec is not None and _server_alive(rec):
            try:
                conn, info = _connect(rec, owner)
                client = EngineClient(conn, info, model, path)
                client.start_seconds = time.perf_counter() - t0
                log.info("engine server %s (pid %s, %s): connected in %.2f s, serving since %.0f s",
                         key, info["pid"], model, client.start_seconds, info.get("uptime", 0))
                return client
            except (OSError, EOFError, EngineServerError) as exc:
                log.warning("engine server %s (pid %s) does not answer (%s): replacing it", key,
                            rec.get("pid"), exc)
                _kill(rec)
        elif rec is not None:
            log.info("engine server %s: found dead (pid %s), starting a new one", key, rec.get("pid"))
        rec = _start(path, key, desc, backend, model, settings, owner, run_dir, start_timeout)
        conn, info = _connect(rec, owner)
    client = EngineClient(conn, info, model, path)
    client.start_seconds = time.perf_counter() - t0
    log.info("engine server %s (pid %s, %s): started in %.1f s", key, info["pid"], model, client.start_seconds)
    return client


def _start(path: Path, key: str, desc: dict, backend: str, model: str, settings: Mapping[str, Any],
           owner: tuple[int, int], run_dir: Path, timeout: float) -> dict:
    logfile = path.with_suffix(".log")
    rec = {"key": key, "describe": desc, "backend": backend, "model": model, "settings": dict(settings),
           "address": _address(run_dir, key), "authkey": secrets.token_hex(32), "owners": [list(owner)],
           "log": str(logfile), "pid": None, "ready": False, "cwd": str(Path.cwd())}
    _write_record(path, rec)
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[2])  # workflow_scripts/
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_root, env.get("PYTHONPATH")]))
    with open(logfile, "ab") as lf:
        proc = subprocess.Popen([sys.executable, "-m", "longmab.engines.server", str(path.resolve())],
                                stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, close_fds=True)
    log.info("engine server %s: starting (pid %d, %s %s); log %s", key, proc.pid, backend, model, logfile)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cur = _read_record(path) or {}
        if cur.get("ready") and cur.get("pid") == proc.pid:
            return cur
        if proc.poll() is not None:
            tail = logfile.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
            path.unlink(missing_ok=True)
            raise EngineServerError(f"the engine server for {model} exited with status {proc.returncode} "
                                    f"before it was ready; the end of {logfile}:\n" + "\n".join(tail))
        time.sleep(0.2)
    proc.kill()
    path.unlink(missing_ok=True)
    raise EngineServerError(f"the engine server for {model} was not ready after {timeout:.0f} s; see {logfile}")


# --------------------------------------------------------------------------------------------------
# Server


class _Server:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rec = _read_record(path)
        if self.rec is None:
            raise SystemExit(f"no engine server record at {path}")
        self.clients = 0
        self.clients_lock = threading.Lock()
        self.last_active = time.monotonic()
        self.stopping = threading.Event()
        self.started = time.monotonic()

    # -- owners / lifetime -------------------------------------------------------------------------
    def owners(self) -> list:
        rec = _read_record(self.path) or self.rec
        return rec.get("owners", [])

    def add_owner(self, owner: list) -> None:
        with self.clients_lock:
            rec = _read_record(self.path) or self.rec
            owners = [o for o in rec.get("owners", []) if owner_alive(o)]
            if list(owner) not in owners:
                owners.append(list(owner))
                rec["owners"] = owners
                _write_record(self.path, rec)
                self.rec = rec

    def watch(self) -> None:
        while not self.stopping.wait(WATCH_INTERVAL):
            with self.clients_lock:
                busy = self.clients > 0
            if busy:
                self.last_active = time.monotonic()
                continue
            if not any(owner_alive(o) for o in self.owners()):
                log.info("engine server: every owner is gone and no job is connected; exiting")
                self.stop()
            elif time.monotonic() - self.last_active > IDLE_TIMEOUT:
                log.info("engine server: idle for %.0f s; exiting", IDLE_TIMEOUT)
                self.stop()

    def stop(self, *_: Any) -> None:
        self.stopping.set()

    # -- serving -----------------------------------------------------------------------------------
    def serve(self) -> None:
        """Start the engine, then run every engine call in this (main) thread, one at a time, while
        a thread accepts connections and one thread per client reads its messages. vLLM's CPU
        kernels must run in the thread that set up their OpenMP threads (a call from another thread
        fails: "thread_num (2 vs. 1)"), and one call at a time keeps each call's texts what they
        would be in the job's own process."""
        import queue

        from .base import set_chat_template
        from .factory import make_engine

        rec = self.rec
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        log.info("engine server %s: pid %d, %s %s, settings %s", rec["key"], os.getpid(), rec["backend"],
                 rec["model"], rec["settings"])
        self.engine = make_engine(rec["backend"], rec["model"], **rec["settings"])
        tok = getattr(self.engine, "tokenizer", None)
        self.tokenizer_template = getattr(tok, "chat_template", None)
        self.set_chat_template = set_chat_template
        self.calls: queue.Queue = queue.Queue()
        listener = Listener(rec["address"], family="AF_UNIX", authkey=bytes.fromhex(rec["authkey"]))
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        cur = _read_record(self.path) or rec
        cur.update(pid=os.getpid(), pid_start=_proc_start(os.getpid()), ready=True,
                   engine=getattr(self.engine, "name", rec["backend"]),
                   start_seconds=getattr(self.engine, "start_seconds", None))
        _write_record(self.path, cur)
        self.rec = cur
        log.info("engine server %s: ready", rec["key"])
        threading.Thread(target=self.watch, daemon=True).start()
        threading.Thread(target=self.accept, args=(listener,), daemon=True).start()
        try:
            while not self.stopping.is_set():
                try:
                    call, done = self.calls.get(timeout=0.5)
                except queue.Empty:
                    continue
                try:
                    call()
                finally:
                    done.set()
        finally:
            with contextlib.suppress(Exception):
                listener.close()
            self.engine.close()
            rec_now = _read_record(self.path)
            if rec_now is not None and rec_now.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            log.info("engine server %s: stopped after %.0f s", rec["key"], time.monotonic() - self.started)
            logging.shutdown()
            os._exit(0)  # the client threads are blocked in recv(): do not wait for them

    def accept(self, listener: Listener) -> None:
        while not self.stopping.is_set():
            try:
                conn = listener.accept()
            except Exception as exc:  # noqa: BLE001 - a client that failed authentication, or closed
                if self.stopping.is_set():
                    return
                log.warning("engine server: refused a connection: %s", exc)
                continue
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def run_in_engine_thread(self, fn) -> None:
        """Run ``fn`` in the main thread (the engine's) and wait for it; its exception is re-raised."""
        box: dict = {}

        def call() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the client's thread
                box["exc"] = exc

        done = threading.Event()
        self.calls.put((call, done))
        while not done.wait(0.5):
            if self.stopping.is_set():
                raise EngineServerError("the engine server is stopping")
        if "exc" in box:
            raise box["exc"]

    def use_template(self, template: str | None) -> None:
        """The call's chat template (None: the model's own, restored after another call's)."""
        self.set_chat_template(self.engine, template)
        if template is None and getattr(self.engine, "tokenizer", None) is not None:
            self.engine.tokenizer.chat_template = self.tokenizer_template

    def handle(self, conn: Connection) -> None:
        with self.clients_lock:
            self.clients += 1
        try:
            while not self.stopping.is_set():
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    return
                op = msg[0]
                if op == "bye":
                    return
                try:
                    self.dispatch(conn, msg)
                except (EOFError, OSError):
                    return  # the client went away mid-call
                except Exception as exc:
                    log.exception("engine server: %s call failed", op)
                    with contextlib.suppress(OSError, EOFError):
                        conn.send(("error", type(exc).__name__, str(exc)))
        finally:
            with self.clients_lock:
                self.clients -= 1
                self.last_active = time.monotonic()
            with contextlib.suppress(OSError):
                conn.close()

    def dispatch(self, conn: Connection, msg: tuple) -> None:
        op = msg[0]
        if op == "hello":
            _, key, owner = msg
            if key != self.rec["key"]:
                conn.send(("refused", f"server key {self.rec['key']}, job key {key}"))
                return
            self.add_owner(owner)
            conn.send(("ok", {"pid": os.getpid(), "key": key, "engine": self.rec.get("engine"),
                              "serves_adapters": bool(getattr(self.engine, "serves_adapters", False)),
                              "log": self.rec.get("log"), "uptime": time.monotonic() - self.started}))
        elif op == "generate":
            _, convs, sampling, seeds, template, adapter = msg
            out: dict = {}

            def gen() -> None:
                self.use_template(template)
                self.engine.adapter = adapter
                out["texts"] = self.engine.generate(convs, SamplingConfig(**sampling), seeds)
                out["stats"] = dict(getattr(self.engine, "last_stats", {}) or {})

            self.run_in_engine_thread(gen)
            conn.send(("ok", out["texts"], out["stats"]))
        elif op == "stream":
            _, requests, sampling, template, adapter = msg
            out = {}

            def on_done(i, text):
                conn.send(("done", i, text))
                reply = conn.recv()
                if reply[0] == "abort":
                    raise _Aborted(reply[1])
                return reply[1]

            def stream() -> None:
                from .base import stream_generate

                self.use_template(template)
                self.engine.adapter = adapter
                try:
                    out["stats"] = stream_generate(self.engine, requests, SamplingConfig(**sampling), on_done)
                except _Aborted as exc:
                    out["stats"] = {"aborted": str(exc)}

            self.run_in_engine_thread(stream)
            conn.send(("end", out["stats"]))
        else:
            raise ValueError(f"unknown call {op!r}")


class _Aborted(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m longmab.engines.server RECORD.json")
    _Server(Path(args[0])).serve()


if __name__ == "__main__":
    main()

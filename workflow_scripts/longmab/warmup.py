"""Format warm-up of the embedded policy: the stand-in for instruction tuning (embedded default only).

The paper's policies (Llama-3.1-8B-Instruct, Qwen-2.5-7B-Instruct) answer in the format their prompt
asks for; the embedded SmolLM2-135M-Instruct (a Q4 GGUF, dequantized) does not: it wrote the answer
line in 0 of 32 evaluation outputs (issue #19), so every reward and score was 0. This module teaches
it our two prompt formats with a few supervised steps, so that the embedded run is a miniature of
the paper's setting rather than a test of a model that cannot be scored:

- ``answer`` prompts (:data:`longmab.prompts.ANSWER_TEMPLATE`) -> ``Reasoning: <the fact sentences,
  quoted with their passage numbers>`` / ``Answer: <answer>``;
- ``probe`` prompts (gold answer given) -> the given answer restated, the quoted facts, then
  ``The answer is <answer>.``

The examples come from the synthetic generator's **training world** only (:mod:`longmab.synth`; the
test world shares no name with it) under their own seed streams, with **short contexts** and, for
the answer format, **1-hop questions** by default: the warm-up teaches the format and quoting, not
the long-context, multi-hop skill that preference optimisation is meant to improve (that is what the
distractor-rich, multi-hop data of the main run measures). The probe examples explain a given
answer to the training data's mix of 1-hop, 2-hop and comparison questions. Prompts are rendered with the policy
tokenizer's own chat template, the one vLLM applies at generation time, and the loss is on the
response tokens only. Full fine-tuning with AdamW in a plain, seeded torch loop: deterministic on
one machine for a given dtype.

Never used by the paper configs (``models.warmup.enabled: false`` there); docs/fidelity.md says so.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import synth
from .device import native_bf16
from .io import atomic_dir
from .prompts import load_templates
from .seeds import derive_seed

log = logging.getLogger("longmab")

_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class WarmupSettings:
    """What determines the warmed-up model (``models.warmup`` in the config)."""

    examples: int = 80          # training examples (each one prompt: answer or probe template)
    probe_share: float = 0.5    # share of examples rendered with the probe template
    passages: tuple[int, int] = (2, 4)
    words: tuple[int, int] = (25, 40)
    two_hop_fraction: float = 0.0
    epochs: int = 1
    batch_size: int = 4
    learning_rate: float = 1e-4
    dtype: str = "auto"         # "auto": bfloat16 autocast where the CPU has native bf16, else float32
    threads: int = 0            # 0: torch's default
    seed: int = 42

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, seed: int | None = None) -> WarmupSettings:
        d = dict(d or {})
        d.pop("enabled", None)
        if seed is not None:
            d["seed"] = int(seed)
        for key in ("passages", "words"):
            if key in d and d[key] is not None:
                d[key] = tuple(int(x) for x in d[key])
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown models.warmup key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


# --------------------------------------------------------------------------------------------------
# examples


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_RE.split(text.strip()) if s]


def _fact(passage: str, must: Sequence[str]) -> str:
    """The first sentence of ``passage`` that contains every string of ``must``."""
    for sentence in _sentences(passage):
        if all(m in sentence for m in must):
            return sentence
    raise ValueError(f"no sentence with {list(must)} in passage {passage[:60]!r}")


def _passage_texts(context: str) -> list[str]:
    return [block.partition("\n")[2] for block in context.split("\n\n")]


def reasoning_steps(row: Mapping[str, Any]) -> list[str]:
    """Quoted fact sentences that lead to the answer of a synthetic sample (needs ``meta``)."""
    meta = row["meta"]
    texts = _passage_texts(row["context"])
    entities = meta["passage_entities"]
    ev = [entities.index(e) + 1 for e in meta["evidence_entities"]]
    answer = row["answer"]
    if meta["hops"] == 1:
        pairs = [(ev[0], [answer])]
    elif meta["bridge"] is not None:
        pairs = [(ev[0], [meta["bridge"]]), (ev[1], [answer])]
    else:  # comparison: the year sentence of both entities
        pairs = [(i, [entities[i - 1], "founded" if meta["type"] == "founded_first" else "born"])
                 for i in ev]
        pairs = [(i, must + [y]) for (i, must) in pairs
                 for y in re.findall(r"\b1[0-9]{3}\b", texts[i - 1])[:1]]
    steps = [f'Passage {i} says: "{_fact(texts[i - 1], must)}"' for i, must in pairs]
    if meta["bridge"] is None and meta["hops"] == 2:
        steps.append(f"{answer} comes first.")
    return steps


def answer_response(row: Mapping[str, Any]) -> str:
    return "Reasoning: " + " ".join(reasoning_steps(row)) + "\nAnswer: " + row["answer"]


def probe_response(row: Mapping[str, Any]) -> str:
    """The probe's reply: the given answer restated, the quoted facts, the final sentence. Restating
    first teaches the model to explain the answer it is *given* (as the paper's instruct models do)
    rather than to look for one of its own; on multi-hop questions the two differ."""
    return (f"The correct answer is {row['answer']}. " + " ".join(reasoning_steps(row))
            + f" The answer is {row['answer']}.")


def build_examples(settings: WarmupSettings, templates: Mapping[str, str] | None = None) -> list[dict]:
    """Chat examples ``{"messages": [user, assistant], "kind": "answer" | "probe", "id"}``.

    Drawn from the training world of :mod:`longmab.synth` (never the test world): answer-template
    examples from set ``warmup-answer`` with ``two_hop_fraction`` multi-hop questions (default 0:
    the format, not the multi-hop skill), probe-template examples from set ``warmup-probe`` with the
    training data's question mix (explaining a *given* answer to a 2-hop or comparison question is
    the probe's job), interleaved in a seeded order.
    """
    templates = templates or load_templates()
    s = settings
    n_probe = round(s.examples * s.probe_share)
    common = {"seed": s.seed, "n_test_per_set": 1, "passages_per_context": s.passages,
              "words_per_passage": s.words, "related_fraction": 0.0, "keep_meta": True}
    answer_rows = synth.generate_dataset(n_train=s.examples - n_probe, two_hop_fraction=s.two_hop_fraction,
                                         comparison_fraction=0.0, train_set_name="warmup-answer",
                                         **common)[synth.TRAIN]
    probe_rows = synth.generate_dataset(n_train=n_probe, train_set_name="warmup-probe", **common)[synth.TRAIN]
    out = []
    for row in answer_rows:
        prompt = templates["answer"].format(context=row["context"], question=row["input"])
        out.append({"id": f"answer-{row['id']}", "kind": "answer",
                    "messages": [{"role": "user", "content": prompt},
                                 {"role": "assistant", "content": answer_response(row)}]})
    for row in probe_rows:
        prompt = templates["probe"].format(context=row["context"], question=row["input"], answer=row["answer"])
        out.append({"id": f"probe-{row['id']}", "kind": "probe",
                    "messages": [{"role": "user", "content": prompt},
                                 {"role": "assistant", "content": probe_response(row)}]})
    synth._Rng(derive_seed(s.seed, "warmup", "interleave")).shuffle(out)
    return out


# --------------------------------------------------------------------------------------------------
# training


def _encode(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids of the whole chat and labels masked (-100) outside the assistant's reply."""
    prompt_ids = tokenizer.apply_chat_template(messages[:1], tokenize=True, add_generation_prompt=True)
    full_ids = tokenizer.apply_chat_template(messages, tokenize=True)
    if hasattr(prompt_ids, "input_ids"):
        prompt_ids, full_ids = prompt_ids["input_ids"], full_ids["input_ids"]
    prompt_ids, full_ids = list(prompt_ids), list(full_ids)
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise RuntimeError("the chat template renders the prompt differently with a reply appended")
    # the reply and its end-of-turn token; the template's trailing newline is not trained
    end = len(full_ids)
    while end > len(prompt_ids) and full_ids[end - 1] != tokenizer.eos_token_id:
        end -= 1
    full_ids = full_ids[:end]
    labels = [-100] * len(prompt_ids) + full_ids[len(prompt_ids):]
    return full_ids, labels


def train_warmup(base_dir: str | os.PathLike, out_dir: str | os.PathLike, settings: WarmupSettings,
                 examples: Sequence[Mapping[str, Any]] | None = None) -> dict:
    """Fine-tune the model in ``base_dir`` on the warm-up examples and save it to ``out_dir``
    (atomically, with the tokenizer and a ``warmup.json`` record). Returns the record."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    s = settings
    t0 = time.perf_counter()
    examples = list(examples if examples is not None else build_examples(s))
    if s.threads:
        torch.set_num_threads(int(s.threads))
    bf16 = s.dtype == "bfloat16" or (s.dtype == "auto" and native_bf16())
    if s.dtype not in ("auto", "bfloat16", "float32"):
        raise ValueError(f"models.warmup.dtype must be auto, bfloat16 or float32, got {s.dtype!r}")
    torch.manual_seed(derive_seed(s.seed, "warmup", "torch"))
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model.train()
    encoded = [_encode(tokenizer, ex["messages"]) for ex in examples]
    order_rng = synth._Rng(derive_seed(s.seed, "warmup", "order"))
    steps_per_epoch = math.ceil(len(encoded) / s.batch_size)
    total = steps_per_epoch * s.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=s.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / max(1, total // 10)) * 0.5 * (1 + math.cos(math.pi * k / total)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    history, step, tokens = [], 0, 0
    log.info("format warm-up: %d examples (%d probe), %d epochs x %d steps, lr %g, %s",
             len(encoded), sum(ex["kind"] == "probe" for ex in examples), s.epochs, steps_per_epoch,
             s.learning_rate, "bf16 autocast" if bf16 else "float32")
    for epoch in range(s.epochs):
        order = list(range(len(encoded)))
        order_rng.shuffle(order)
        for b in range(0, len(order), s.batch_size):
            batch = [encoded[i] for i in order[b : b + s.batch_size]]
            width = -(-max(len(ids) for ids, _ in batch) // 64) * 64  # few distinct shapes for oneDNN
            ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in batch])
            labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in batch])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in batch])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            tokens += int(mask.sum())
            history.append({"step": step, "epoch": epoch + 1, "loss": round(loss.item(), 5)})
            log.info("warm-up step %d/%d  loss %.4f  (%.0f tok/s)", step, total, loss.item(),
                     tokens / (time.perf_counter() - t0))
    model.eval()
    record = {"settings": asdict(s), "bf16_autocast": bf16, "steps": step, "tokens": tokens,
              "examples": len(encoded), "seconds": round(time.perf_counter() - t0, 1),
              "base": str(base_dir), "loss": history}
    with atomic_dir(out_dir) as tmp:
        os.chmod(tmp, 0o755)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (Path(tmp) / "warmup.json").write_text(json.dumps(record, indent=1) + "\n")
    log.info("format warm-up done in %.1f s: %d steps, loss %.3f -> %.3f", record["seconds"], step,
             history[0]["loss"], history[-1]["loss"])
    return record


__all__ = ["WarmupSettings", "answer_response", "build_examples", "probe_response",
           "reasoning_steps", "train_warmup"]

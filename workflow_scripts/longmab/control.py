"""The positive control of the training half (issue #20): a preference set whose direction is known,
and the two measurements that show whether DPO moved a model along it.

Pairs come from the synthetic generator's training world with short contexts: the prompt is our
answer template (:data:`longmab.prompts.ANSWER_TEMPLATE`) on a 1-hop question, **chosen** answers in
the answer format with the gold answer (``Reasoning: Passage i says: "..."`` / ``Answer: X``,
:func:`longmab.warmup.answer_response`), **rejected** quotes a distractor passage and never writes an
answer line. A training run that acts on these pairs (through the real ``pairs`` -> ``dpo_train``
-> ``dpo_export`` rules, ``pairs.from_file``) must, on **held-out** pairs of the same kind,

- raise the log-probability margin ``log pi(chosen | prompt) - log pi(rejected | prompt)`` over the
  base model's (:func:`preference_margins`), and
- make greedy answers carry the answer marker more often (:func:`marker_rate`).

Swapping chosen and rejected anywhere on the way (the file, the dataset_info.json columns, the
trainer) turns both the other way. Prompts are rendered with the tokenizer's own chat template, as
the engines send them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import mean
from typing import Any

from . import synth
from .metrics import extract_answer
from .prompts import load_templates
from .warmup import _passage_texts, _sentences, answer_response


def control_pairs(n: int, seed: int = 42, set_name: str = "control", passages: tuple[int, int] = (2, 3),
                  templates: Mapping[str, str] | None = None) -> list[dict]:
    """``n`` pairs ``{id, input, answer, prompt, chosen, rejected}`` (1-hop, short contexts).

    Different ``set_name`` values give disjoint seed streams (train vs held-out).
    """
    templates = templates or load_templates()
    rows = synth.generate_dataset(seed=seed, n_train=n, n_test_per_set=1, passages_per_context=passages,
                                  two_hop_fraction=0.0, comparison_fraction=0.0, related_fraction=0.0,
                                  keep_meta=True, train_set_name=set_name)[synth.TRAIN]
    out = []
    for row in rows:
        texts = _passage_texts(row["context"])
        evidence = {row["meta"]["passage_entities"].index(e) for e in row["meta"]["evidence_entities"]}
        other = next(t for i, t in enumerate(texts) if i not in evidence)
        rejected = " ".join(_sentences(other)[:2])
        out.append({"id": row["id"], "input": row["input"], "answer": row["answer"],
                    "prompt": templates["answer"].format(context=row["context"], question=row["input"]),
                    "chosen": answer_response(row), "rejected": rejected})
    return out


def _chat_ids(tokenizer, prompt: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                        add_generation_prompt=True)
    return list(ids["input_ids"] if hasattr(ids, "input_ids") else ids)


def _sequence_logprob(model, tokenizer, prompt_ids: list[int], response: str) -> float:
    """Sum of log pi(response tokens | prompt), the response ending with the end-of-turn token."""
    import torch

    resp = tokenizer.encode(response, add_special_tokens=False) + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt_ids + resp])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1:-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(logp.gather(1, torch.tensor(resp).unsqueeze(1)).sum())


def load(model_dir: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval()
    return model, tok


def preference_margins(model_dir: str, pairs: Sequence[Mapping[str, Any]]) -> list[float]:
    """Per pair: log pi(chosen) - log pi(rejected) under the model in ``model_dir`` (float32)."""
    model, tok = load(model_dir)
    out = []
    for p in pairs:
        ids = _chat_ids(tok, p["prompt"])
        out.append(_sequence_logprob(model, tok, ids, p["chosen"]) - _sequence_logprob(model, tok, ids, p["rejected"]))
    return out


def greedy_answers(model_dir: str, prompts: Sequence[str], max_new_tokens: int = 40) -> list[str]:
    """Greedy completions (float32, one prompt at a time: no padding effects)."""
    import torch

    model, tok = load(model_dir)
    out = []
    for prompt in prompts:
        ids = torch.tensor([_chat_ids(tok, prompt)])
        with torch.no_grad():
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tok.eos_token_id)
        out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
    return out


def marker_rate(answers: Sequence[str]) -> float:
    """Share of answers with an answer line the metrics can read."""
    return mean(extract_answer(a) is not None for a in answers) if answers else 0.0

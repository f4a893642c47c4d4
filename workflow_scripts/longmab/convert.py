"""Convert public multi-hop QA files into the pipeline's raw sample format.

Raw sample = ``{id, input, answer, context}`` (docs/design.md) plus ``evidence``: the 1-based
numbers of the ``Passage i:`` blocks that support the answer (ground truth for the bandit's
evidence hit rate; the pipeline itself never reads it). Contexts are the item's paragraphs joined
as ``"Passage i:\\n{title}\\n{text}"`` separated by blank lines, in the file's order, which is the
layout :func:`longmab.chunking.passage_spans` recognizes.

- MuSiQue (``musique_*.json`` / ``.jsonl``): ``id, question, answer, paragraphs[{title,
  paragraph_text, is_supporting}]``; unanswerable items (``answerable: false``) are skipped.
- HotpotQA (distractor setting): ``_id, question, answer, context[[title, [sentences]]],
  supporting_facts[[title, sentence_index]]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

FORMATS = ("musique", "hotpotqa")


def join_passages(passages: Iterable[tuple[str, str]]) -> str:
    """``[(title, text), ...]`` -> ``"Passage 1:\\ntitle\\ntext\\n\\nPassage 2:\\n..."``."""
    blocks = []
    for i, (title, text) in enumerate(passages, start=1):
        body = f"{title.strip()}\n{text.strip()}" if title and title.strip() else text.strip()
        blocks.append(f"Passage {i}:\n{body}")
    return "\n\n".join(blocks)


def musique_sample(item: Mapping) -> dict | None:
    """One MuSiQue item -> raw sample (None for unanswerable items)."""
    if item.get("answerable") is False:
        return None
    paragraphs = item["paragraphs"]
    return {
        "id": str(item["id"]),
        "input": item["question"].strip(),
        "answer": item["answer"].strip(),
        "context": join_passages((p.get("title", ""), p["paragraph_text"]) for p in paragraphs),
        "evidence": [i for i, p in enumerate(paragraphs, start=1) if p.get("is_supporting")],
    }


def hotpotqa_sample(item: Mapping) -> dict:
    """One HotpotQA (distractor) item -> raw sample."""
    titles = [title for title, _ in item["context"]]
    supporting = {title for title, _ in item.get("supporting_facts", [])}
    return {
        "id": str(item["_id"]),
        "input": item["question"].strip(),
        "answer": item["answer"].strip(),
        "context": join_passages((title, " ".join(s.strip() for s in sents)) for title, sents in item["context"]),
        "evidence": [i for i, title in enumerate(titles, start=1) if title in supporting],
    }


def load_items(path: str | os.PathLike) -> list[dict]:
    """A JSON list or a JSONL file of items."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        return json.loads(text)
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:  # name the file's line, not the line within the line
            raise ValueError(f"line {number}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    return items


def convert_items(items: Iterable[Mapping], fmt: str) -> list[dict]:
    """Convert items of format ``fmt`` (one of :data:`FORMATS`); skipped items are left out."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    convert = musique_sample if fmt == "musique" else hotpotqa_sample
    out = []
    for n, item in enumerate(items, start=1):
        try:
            sample = convert(item)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"item {n}: not a {fmt} item ({type(exc).__name__}: {exc})") from None
        if sample is not None:
            out.append(sample)
    return out


def convert_file(path: str | os.PathLike, fmt: str, limit: int = 0) -> list[dict]:
    """Read and convert a file; ``limit`` > 0 keeps the first ``limit`` converted samples."""
    try:
        samples = convert_items(load_items(path), fmt)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return samples[:limit] if limit > 0 else samples

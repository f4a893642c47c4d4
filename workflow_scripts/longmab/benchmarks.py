"""Evaluation set loaders (method.md §8): LongBench and InfiniteBench JSONL, normalized in one place.

Every loader returns items of one shape::

    {"id": str, "input": str, "context": str, "answers": list[str]}

plus ``evidence`` (list of passage numbers) when the file has it (our synthetic sets do; it is only
used for plots). Formats:

- ``longbench``: ``input, context, answers (list), length, dataset, _id`` per line; ``id`` <- ``_id``.
- ``infinitebench``: ``id, input, context, answer (list or str), options``; ``answers`` <- ``answer``.
  ``options`` (multiple choice sets) is ignored: longbook_qa_eng, the set the paper uses, has none.

A bad row raises :class:`BenchmarkError` naming the file and the 1-based line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

FORMATS = ("longbench", "infinitebench")


class BenchmarkError(ValueError):
    """A malformed evaluation file; the message is ``PATH:LINE: reason``."""


def _as_answers(value, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise BenchmarkError(f"{where}: answers must be a non-empty list of strings, got {value!r:.80}")
    out = []
    for a in value:
        if isinstance(a, bool) or not isinstance(a, (str, int, float)):
            raise BenchmarkError(f"{where}: answer {a!r:.80} is not a string")
        out.append(str(a))
    return out


def _text(row: dict, key: str, where: str) -> str:
    if key not in row:
        raise BenchmarkError(f"{where}: missing field '{key}'")
    value = row[key]
    if not isinstance(value, str):
        raise BenchmarkError(f"{where}: field '{key}' must be a string, got {type(value).__name__}")
    return value


def _id(row: dict, key: str, where: str) -> str:
    if key not in row:
        raise BenchmarkError(f"{where}: missing field '{key}'")
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise BenchmarkError(f"{where}: field '{key}' must be a non-empty string or integer, got {value!r:.80}")
    return str(value)


def _longbench(row: dict, where: str) -> dict:
    if "answers" not in row:
        raise BenchmarkError(f"{where}: missing field 'answers' (LongBench format)")
    return {"id": _id(row, "_id", where), "input": _text(row, "input", where),
            "context": _text(row, "context", where), "answers": _as_answers(row["answers"], where)}


def _infinitebench(row: dict, where: str) -> dict:
    if "answer" not in row:
        raise BenchmarkError(f"{where}: missing field 'answer' (InfiniteBench format)")
    return {"id": _id(row, "id", where), "input": _text(row, "input", where),
            "context": _text(row, "context", where), "answers": _as_answers(row["answer"], where)}


_NORMALIZERS: dict[str, Callable[[dict, str], dict]] = {"longbench": _longbench, "infinitebench": _infinitebench}


def normalize_item(row: dict, fmt: str, where: str = "<row>") -> dict:
    """One raw row of format ``fmt`` -> ``{id, input, context, answers[, evidence]}``."""
    if fmt not in _NORMALIZERS:
        raise ValueError(f"unknown benchmark format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if not isinstance(row, dict):
        raise BenchmarkError(f"{where}: expected a JSON object, got {type(row).__name__}")
    item = _NORMALIZERS[fmt](row, where)
    if isinstance(row.get("evidence"), list):
        item["evidence"] = [int(e) for e in row["evidence"] if isinstance(e, int) and not isinstance(e, bool)]
    return item


def load_benchmark(path: str | os.PathLike, fmt: str, max_samples: int = 0) -> list[dict]:
    """Read a benchmark JSONL file and normalize every row.

    Parameters
    ----------
    path : path
        JSONL file (blank lines skipped; a UTF-8 BOM tolerated).
    fmt : {"longbench", "infinitebench"}
    max_samples : int
        Keep only the first N items (0 = all). Rows after the N-th are not parsed.

    Raises
    ------
    BenchmarkError
        ``PATH:LINE: reason`` for invalid JSON, a missing or mistyped field, or a duplicate id;
        ``PATH: no items`` for an empty file.
    """
    if fmt not in _NORMALIZERS:
        raise ValueError(f"unknown benchmark format {fmt!r} (expected one of {', '.join(FORMATS)})")
    path = Path(path)
    items: list[dict] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if max_samples and len(items) >= max_samples:
                break
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"{where}: invalid JSON: {exc.msg}") from None
            item = normalize_item(row, fmt, where)
            if item["id"] in seen:
                raise BenchmarkError(f"{where}: duplicate id {item['id']!r} (first on line {seen[item['id']]})")
            seen[item["id"]] = lineno
            items.append(item)
    if not items:
        raise BenchmarkError(f"{path}: no items")
    return items

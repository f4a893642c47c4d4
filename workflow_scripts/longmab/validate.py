"""Validation of raw training JSONL (one sample per line: ``{id, input, answer, context}`` + optional
``evidence``).

Every problem is reported as ``PATH:LINE: reason`` (LINE is 1-based), so an editor or a terminal can
jump straight to it. Accepted on purpose: a UTF-8 byte-order mark, CRLF line endings and blank lines
(anywhere; they are skipped). Lines are split on ``\\n`` only: JSON written with ``ensure_ascii=False``
may hold a raw U+2028 inside a string, which ``str.splitlines`` would wrongly treat as a line break.
"""

from __future__ import annotations

import json
import os
from typing import Any

REQUIRED_TEXT_FIELDS = ("input", "answer", "context")


class DataError(ValueError):
    """Raised by :func:`load_samples` when a file has problems; the message lists all of them."""


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    return {dict: "object", list: "array", str: "string", int: "integer", float: "number"}.get(
        type(value), type(value).__name__
    )


def _check_row(row: Any) -> list[str]:
    """Problems of one parsed line (without the ``PATH:LINE:`` prefix)."""
    if not isinstance(row, dict):
        return [f"line is not a JSON object (got {_type_name(row)})"]
    problems = []
    if "id" not in row:
        problems.append("missing field 'id'")
    else:
        sid = row["id"]
        if isinstance(sid, bool) or not isinstance(sid, (str, int)):
            problems.append(f"field 'id' must be a string or an integer (got {_type_name(sid)})")
        elif isinstance(sid, str) and not sid.strip():
            problems.append("field 'id' is empty")
    for name in REQUIRED_TEXT_FIELDS:
        if name not in row:
            problems.append(f"missing field '{name}'")
        elif not isinstance(row[name], str):
            problems.append(f"field '{name}' must be a string (got {_type_name(row[name])})")
        elif not row[name].strip():
            problems.append(f"field '{name}' is empty")
    if "evidence" in row:
        ev = row["evidence"]
        if not isinstance(ev, list) or any(isinstance(x, bool) or not isinstance(x, int) for x in ev):
            problems.append("field 'evidence' must be a list of integers")
    return problems


def _iter_lines(path: str | os.PathLike):
    """Yield ``(line_number, text_or_None, decode_error_or_None)`` for every line of the file."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            yield number, raw.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            yield number, None, exc


def scan_file(path: str | os.PathLike, max_errors: int | None = None,
              benchmark: str | None = None) -> tuple[list[str], list[dict]]:
    """``(messages, valid_samples)`` of a file; after ``max_errors`` messages (None: all) the rest
    are counted, not listed, and a last message says how many were left out.

    ``benchmark`` (``longbench`` / ``infinitebench``) checks an evaluation file of that format
    (:func:`longmab.benchmarks.normalize_item`) instead of raw training rows.
    """
    errors: list[str] = []
    samples: list[dict] = []
    first_line_of_id: dict[str, int] = {}
    seen_content = False
    left_out = 0

    def add(number: int, reason: str) -> bool:
        nonlocal left_out
        if max_errors is not None and len(errors) >= max_errors:
            left_out += 1
        else:
            errors.append(f"{path}:{number}: {reason}")
        return False

    for number, text, decode_error in _iter_lines(path):
        if decode_error is not None:
            seen_content = True
            if add(number, f"not valid UTF-8 ({decode_error.reason} at byte {decode_error.start})"):
                return errors, samples
            continue
        if not text.strip():
            continue
        seen_content = True
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            if add(number, f"malformed JSON: {exc}"):
                return errors, samples
            continue
        if benchmark is not None:
            problems, sid = _check_benchmark_row(row, benchmark)
        else:
            problems = _check_row(row)
            sid = row.get("id") if isinstance(row, dict) else None
        if isinstance(sid, (str, int)) and not isinstance(sid, bool):
            key = str(sid)
            if key in first_line_of_id:
                problems.append(f"duplicate id {key!r} (first seen on line {first_line_of_id[key]})")
            else:
                first_line_of_id[key] = number
        if not problems:
            samples.append(row)
        for reason in problems:
            if add(number, reason):
                return errors, samples
    if not seen_content:
        add(1, "empty file (no JSON lines)")
    if left_out:
        errors.append(f"{path}: {left_out} more problem(s) not listed (--max-errors 0 lists all)")
    return errors, samples


def _check_benchmark_row(row: Any, fmt: str) -> tuple[list[str], Any]:
    """Problems of one evaluation row of format ``fmt``, and its id."""
    from .benchmarks import BenchmarkError, normalize_item

    try:
        item = normalize_item(row, fmt, "")
    except BenchmarkError as exc:
        return [str(exc).removeprefix(": ")], None
    return [], item["id"]


def validate_file(path: str | os.PathLike, max_errors: int = 20) -> list[str]:
    """Return the problems of a raw training JSONL file as ``PATH:LINE: reason`` messages.

    Stops after ``max_errors`` messages (``max_errors <= 0`` or ``None``: report all). An empty list
    means the file is valid.
    """
    limit = max_errors if max_errors and max_errors > 0 else None
    errors, _ = scan_file(path, limit)
    return errors


def load_samples(path: str | os.PathLike) -> list[dict]:
    """Read and validate a raw training file; return its samples with ``id`` converted to ``str``.

    Raises :class:`DataError` listing every problem (one per line) if the file is not valid.
    Fields other than ``id`` are kept as they are (unknown fields included).
    """
    errors, samples = scan_file(path, None)
    if errors:
        raise DataError("\n".join(errors))
    out = []
    for row in samples:
        row = dict(row)
        row["id"] = str(row["id"])
        out.append(row)
    return out

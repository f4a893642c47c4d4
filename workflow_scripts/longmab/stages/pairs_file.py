"""Stage `pairs` from a ready-made preference file (``pairs.from_file``): validate it, convert it into
the dataset the pairs stage writes (pairs.jsonl + dataset_info.json), so that the same DPO rules
train on it.

Accepted records (JSON lines, or one JSON list; the format is recognised per record):

- **ours / the reference's** ``construct_po_data`` output: ``prompt``, ``chosen``, ``rejected``
  (strings; ``id``, ``input``, ``answer``, rewards optional and kept);
- **LLaMA-Factory alpaca pairwise**: ``instruction`` (+ optional ``input``, ``system``), ``chosen``,
  ``rejected`` (strings); the prompt is ``instruction + "\\n" + input`` as LLaMA-Factory joins them;
- **LLaMA-Factory sharegpt pairwise**: ``conversations`` (or ``messages``) ending in one user turn
  (``from: human`` / ``role: user``; an optional leading system turn), ``chosen`` and ``rejected``
  as one assistant message each (``{"from": "gpt", "value": ...}`` / ``{"role": "assistant",
  "content": ...}``) or a plain string. Multi-turn histories are refused (the pairs stage trains
  single-turn prompts).

Every problem is reported as ``FILE:LINE: message`` (line = the JSON line, or the record's index + 1
in a JSON list), all of them at once: a missing or empty field, ``chosen == rejected``, a prompt too
long for ``max_prompt_length`` (prompt + the longer response + ``reserve_tokens``; or middle-cut
with ``truncate: true``, as the pairs stage cuts a context).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..logs import get_logger

log = get_logger("pairs")

FORMATS = ("prompt", "alpaca", "sharegpt")
_USER = {"human", "user"}
_ASSISTANT = {"gpt", "assistant"}
_SYSTEM = {"system"}


class PreferenceFileError(ValueError):
    """A preference file that cannot be trained on; the message lists every problem with its line."""


def read_records(path: str | Path) -> list[tuple[int, object]]:
    """``(line, record)`` of a JSON-lines file or of a file holding one JSON list."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PreferenceFileError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        return [(i + 1, rec) for i, rec in enumerate(data)]
    out, bad = [], []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((no, json.loads(line)))
        except json.JSONDecodeError as exc:
            bad.append(f"{path}:{no}: not valid JSON ({exc.msg} at column {exc.colno})")
    if bad:
        raise PreferenceFileError("\n".join(bad))
    return out


def _text(value) -> str | None:
    """A response given as a string or as one message dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("value", "content"):
            if isinstance(value.get(key), str):
                return value[key]
    return None


def _speaker(turn: dict) -> str:
    return str(turn.get("from", turn.get("role", ""))).lower()


def normalise(rec: object) -> tuple[dict | None, str | None, str]:
    """``(pair, problem, format)``: one record as ``{prompt, chosen, rejected, system?, ...}``."""
    if not isinstance(rec, dict):
        return None, f"expected a JSON object, got {type(rec).__name__}", "?"
    if "conversations" in rec or "messages" in rec:
        fmt = "sharegpt"
        turns = rec.get("conversations", rec.get("messages"))
        if not isinstance(turns, list) or not turns or not all(isinstance(t, dict) for t in turns):
            return None, "'conversations' must be a non-empty list of messages", fmt
        system = rec.get("system")
        if _speaker(turns[0]) in _SYSTEM:
            system, turns = _text(turns[0]), turns[1:]
        if len(turns) != 1 or _speaker(turns[0]) not in _USER:
            return None, (f"'conversations' must hold one user turn (optionally after a system turn), got "
                          f"{[_speaker(t) for t in turns]}: multi-turn prompts are not supported"), fmt
        prompt = _text(turns[0])
        extra = {k: v for k, v in rec.items() if k not in ("conversations", "messages", "chosen", "rejected", "system")}
    elif "instruction" in rec:
        fmt = "alpaca"
        instruction, inp = rec.get("instruction"), rec.get("input") or ""
        if not isinstance(instruction, str) or not isinstance(inp, str):
            return None, "'instruction' and 'input' must be strings", fmt
        prompt = instruction + ("\n" + inp if inp else "")  # as LLaMA-Factory's alpaca converter
        system = rec.get("system")
        extra = {k: v for k, v in rec.items() if k not in ("instruction", "input", "chosen", "rejected", "system")}
    elif "prompt" in rec:
        fmt = "prompt"
        prompt, system = rec.get("prompt"), rec.get("system")
        extra = {k: v for k, v in rec.items() if k not in ("prompt", "chosen", "rejected", "system")}
    else:
        return None, ("no prompt: expected 'prompt' (this project / the reference), 'instruction' "
                      "(LLaMA-Factory alpaca) or 'conversations' / 'messages' (sharegpt)"), "?"
    missing = [k for k in ("chosen", "rejected") if k not in rec]
    if missing:
        return None, f"missing field {missing[0]!r}", fmt
    chosen, rejected = _text(rec["chosen"]), _text(rec["rejected"])
    for name, value in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, str):
            return None, f"{name!r} must be a string or one message", fmt
        if not value.strip():
            return None, f"{name!r} is empty", fmt
    if chosen.strip() == rejected.strip():
        return None, "'chosen' equals 'rejected' (the pair teaches nothing)", fmt
    if system is not None and not isinstance(system, str):
        return None, "'system' must be a string", fmt
    pair = {**extra, "prompt": prompt, "chosen": chosen, "rejected": rejected}
    if system:
        pair["system"] = system
    return pair, None, fmt


def import_pairs(
    path: str | Path,
    encode: Callable[[str], list],
    decode: Callable[[list], str],
    max_prompt_length: int,
    reserve_tokens: int,
    truncate: bool = False,
    max_errors: int = 20,
) -> tuple[list[dict], dict]:
    """Validate and convert a preference file: ``(pair rows, stats)``.

    A prompt is too long when its tokens + the longer response + ``reserve_tokens`` exceed
    ``max_prompt_length`` (the budget the pairs stage gives its own prompts). With ``truncate`` such
    a prompt is cut in the middle (its first and last halves of the budget kept, as the reference
    cuts a context) instead of refused.

    Raises
    ------
    PreferenceFileError
        Listing up to ``max_errors`` problems as ``FILE:LINE: message`` (and how many more).
    """
    path = Path(path)
    records = read_records(path)
    problems: list[str] = []
    pairs: list[dict] = []
    formats: Counter = Counter()
    cut, ids = [], Counter()
    for line, rec in records:
        pair, problem, fmt = normalise(rec)
        formats[fmt] += 1
        if problem:
            problems.append(f"{path}:{line}: {problem}")
            continue
        prompt_ids = encode(pair["prompt"])
        response = max(len(encode(pair["chosen"])), len(encode(pair["rejected"])))
        budget = max_prompt_length - reserve_tokens - response
        if len(prompt_ids) > budget:
            if not truncate or budget < 2:
                problems.append(f"{path}:{line}: prompt of {len(prompt_ids)} tokens + response of {response} + "
                                f"reserve {reserve_tokens} exceeds pairs.max_prompt_length {max_prompt_length} "
                                "(raise it, or set pairs.from_file_truncate: true to cut prompts in the middle)")
                continue
            half = budget // 2
            pair["prompt"] = decode(prompt_ids[:half] + prompt_ids[len(prompt_ids) - half:])
            cut.append(line)
        pair.setdefault("id", f"line-{line}")
        pair["id"] = str(pair["id"])
        ids[pair["id"]] += 1
        pair["source_line"] = line
        pairs.append(pair)
    if not records:
        problems.append(f"{path}: no records")
    dup = sorted(i for i, n in ids.items() if n > 1)
    if dup:
        log.warning("%s: %d ids occur more than once (e.g. %r); each record is kept as its own pair",
                    path, len(dup), dup[0])
    if problems:
        more = len(problems) - max_errors
        shown = problems[:max_errors] + ([f"... and {more} more problems"] if more > 0 else [])
        raise PreferenceFileError(f"{len(problems)} problems in the preference file {path}:\n  " + "\n  ".join(shown))
    stats = {
        "source": str(path),
        "records": len(records),
        "pairs": len(pairs),
        "formats": dict(formats),
        "prompts_truncated": len(cut),
        "prompts_truncated_lines": cut[:50],
    }
    log.info("%s: %d pairs (%s), %d prompts cut in the middle", path, len(pairs),
             ", ".join(f"{k} {v}" for k, v in formats.items()), len(cut))
    return pairs, stats

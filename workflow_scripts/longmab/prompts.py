"""Prompt templates (our own wording; method.md §2, §4) and their rendering.

Two templates, filled with :meth:`str.format`:

- ``probe`` (fields ``{context}``, ``{question}``, ``{answer}``): full document, question and the
  gold answer; asks for a step-by-step explanation citing the document that ends with a sentence
  "The answer is <answer>" (described without writing those three words together).
- ``answer`` (fields ``{context}``, ``{question}``): chunks or full document and the question; asks
  for reasoning then the answer on lines starting ``Reasoning:`` and ``Answer:``.

The default wording describes the answer format in words and never contains an answer marker itself
(no ``answer:``, and no ``the answer is`` either), so a model that echoes its instructions does not
produce a spurious extracted answer (method.md §9; issue #9.5: with the earlier wording '... begins
with the words "The answer is" followed by the correct answer.' an echo was extracted as the answer
'" followed by the correct answer.'). User templates (e.g. the paper's exact prompts, which do
contain markers) replace them through :func:`load_templates`; the probe filter then ignores markers
that repeat the template's own (:func:`longmab.metrics.extract_probe_answer` with ``template=``).
Literal braces in a template must be doubled (``{{`` / ``}}``), as usual for ``str.format``.
"""

from __future__ import annotations

import logging
import os
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger("longmab")

# A probe marker right before the {answer} field: an echo of it reads as a correct final answer.
_MARKER_BEFORE_FIELD_RE = re.compile(r"\bthe answer is\b:?\W*$")

PROBE_TEMPLATE = """\
You are given a document, a question about it, and the correct answer to that question.

Document:
{context}

Question: {question}
Correct answer: {answer}

Explain step by step how the correct answer follows from the document. In each step, cite the \
passage of the document that supports it and quote the relevant words. Finish with one final \
sentence that begins with the words "The answer is" followed by the correct answer."""

ANSWER_TEMPLATE = """\
Read the document below and answer the question that follows it.

Document:
{context}

Question: {question}

Think through the question step by step using only the information in the document. Write your \
response in two parts. The first part is a line that starts with the word "Reasoning" followed by a \
colon, and then your reasoning. The second part is a new line that starts with the word "Answer" \
followed by a colon, and then only the final answer as a short phrase (a name, a date, a number or \
a few words), with nothing after it."""

#: Default templates by name.
DEFAULT_TEMPLATES: dict[str, str] = {"probe": PROBE_TEMPLATE, "answer": ANSWER_TEMPLATE}

#: Fields each template must contain (and the only ones it may contain).
REQUIRED_FIELDS: dict[str, frozenset[str]] = {
    "probe": frozenset({"context", "question", "answer"}),
    "answer": frozenset({"context", "question"}),
}


def template_fields(template: str) -> set[str]:
    """Names of the ``str.format`` fields in ``template`` (raises ``ValueError`` on bad braces)."""
    fields = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            fields.add(name.split(".")[0].split("[")[0])
    return fields


def validate_template(name: str, template: str) -> None:
    """Raise ``ValueError`` naming the template if its fields differ from :data:`REQUIRED_FIELDS`."""
    if name not in REQUIRED_FIELDS:
        raise ValueError(f"unknown prompt template {name!r}; known: {sorted(REQUIRED_FIELDS)}")
    try:
        fields = template_fields(template)
    except ValueError as exc:
        raise ValueError(f"prompt template {name!r} is not a valid str.format template: {exc}") from exc
    required = REQUIRED_FIELDS[name]
    missing, extra = required - fields, fields - required
    if missing:
        raise ValueError(f"prompt template {name!r} lacks the field(s) {{{'}, {'.join(sorted(missing))}}}")
    if extra:
        raise ValueError(
            f"prompt template {name!r} has unknown field(s) {{{'}, {'.join(sorted(extra))}}}"
            f" (allowed: {sorted(required)}; write literal braces as '{{{{' and '}}}}')"
        )


def echo_risks(name: str, template: str) -> list[str]:
    """Warnings about a template whose echo would be scored as an answer (empty when there is none).

    A probe template that writes ``the answer is`` right before ``{answer}`` (e.g. "End with: The
    answer is {answer}") cannot be protected: a model that repeats that line has produced the gold
    answer after a marker, which is exactly what a correct probe looks like.
    """
    if name != "probe":
        return []
    out = []
    for literal, field, _, _ in string.Formatter().parse(template):
        if field == "answer" and _MARKER_BEFORE_FIELD_RE.search(literal.lower()):
            out.append(
                f"prompt template {name!r} writes 'the answer is' right before {{answer}}: a model that "
                "echoes that line passes the probe filter without reasoning; describe the format instead"
            )
    return out


def load_templates(overrides: Mapping[str, str | os.PathLike | None] | None = None) -> dict[str, str]:
    """The default templates with ``overrides`` applied and all templates validated.

    Parameters
    ----------
    overrides : mapping name -> str, path or None, optional
        A value is a template string, or the path of a UTF-8 ``.txt`` file holding one (a
        ``pathlib.Path``, or a string ending in ``.txt``). ``None`` or ``""`` keeps the default.

    Returns
    -------
    dict
        ``{"probe": str, "answer": str}``.

    Raises
    ------
    ValueError
        Unknown template name, or a template whose fields are missing/unknown (the message names it).
    FileNotFoundError
        A ``.txt`` path that does not exist.
    """
    templates = dict(DEFAULT_TEMPLATES)
    for name, value in (overrides or {}).items():
        if name not in REQUIRED_FIELDS:
            raise ValueError(f"unknown prompt template {name!r}; known: {sorted(REQUIRED_FIELDS)}")
        if value is None or value == "":
            continue
        if isinstance(value, os.PathLike) or (isinstance(value, str) and value.strip().endswith(".txt")):
            path = Path(value.strip() if isinstance(value, str) else value)
            if not path.is_file():
                raise FileNotFoundError(f"prompt template {name!r}: file not found: {path}")
            value = path.read_text(encoding="utf-8")
        templates[name] = str(value)
    for name, template in templates.items():
        validate_template(name, template)
        for warning in echo_risks(name, template):
            log.warning(warning)
    return templates


def _user(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def render_probe(templates: Mapping[str, str], context: str, question: str, answer: str) -> list[dict]:
    """Chat messages of the probe prompt: ``[{"role": "user", "content": str}]``."""
    return _user(templates["probe"].format(context=context, question=question, answer=answer))


def render_answer(templates: Mapping[str, str], context: str, question: str) -> list[dict]:
    """Chat messages of the answer prompt: ``[{"role": "user", "content": str}]``."""
    return _user(templates["answer"].format(context=context, question=question))


def join_chunks(chunks: Sequence[str], selected: Sequence[int]) -> str:
    """The selected chunks in document (index) order, joined by ``"\\n"``, as the reference does
    (``"\\n".join(chunks[i] for i in sorted(selected))``: the chunks are not stripped, so the
    whitespace that begins a chunk, e.g. the blank line before ``Passage 3:``, is kept).

    Parameters
    ----------
    chunks : sequence of str, shape (n_chunks,)
    selected : sequence of int
        Indices into ``chunks`` in any order; duplicates are used once.
    """
    idx = sorted({int(i) for i in selected})
    for i in idx:
        if not 0 <= i < len(chunks):
            raise IndexError(f"chunk index {i} out of range for {len(chunks)} chunks")
    return "\n".join(chunks[i] for i in idx)

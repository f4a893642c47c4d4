"""Answer extraction, QA metrics and rollout rewards (method.md §2, §4, §5, §6).

Every metric takes one prediction and one gold answer or a list of gold answers (the max over golds
is returned). Predictions of ``None`` (no answer marker found) score 0. A gold answer that normalizes
to the empty string never matches anything (otherwise ``"" in pred`` would be true for every pred).

SubEM has two modes:

- ``"char"`` (the paper's): the normalized gold is a substring of the normalized prediction.
  False positives: gold ``"U.S."`` normalizes to ``"us"`` and matches ``"thus"``.
- ``"token"``: the normalized gold's tokens appear as a contiguous run of the prediction's tokens.
"""

from __future__ import annotations

import functools
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

#: One gold answer or several (metrics take the max over them).
Gold = str | Sequence[str]

#: Answer markers tried in this order by :func:`extract_answer`; the first one found wins.
ANSWER_PREFIXES = ("answer:", "the answer is:", "final answer is:")
SUBEM_MODES = ("char", "token")

_PUNCT = frozenset(string.punctuation)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PROBE_MARKER_RE = re.compile(r"\bthe answer is\b:?")
_PROBE_CAPTURE_RE = re.compile(r"\s*(.*)")
_WORD_RE = re.compile(r"\w+")

#: Words compared on each side of an answer marker to recognise an echo of the prompt's own
#: instruction (see :func:`marker_contexts`).
ECHO_CONTEXT_WORDS = 3

#: A capture whose first this-many words run verbatim through the template's own text (outside its
#: ``{fields}``) quotes the instructions, not an answer (:func:`template_word_runs`).
ECHO_QUOTE_WORDS = 5


def normalize_answer(s: str) -> str:
    """SQuAD normalization: lower-case, drop ASCII punctuation, drop articles, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def _golds(gold: Gold) -> list[str]:
    if isinstance(gold, str):
        return [gold]
    return [str(g) for g in gold]


def best_over_golds(metric: Callable[[str | None, str], float], pred: str | None, gold: Gold) -> float:
    """``max(metric(pred, g) for g in golds)``; 0.0 for an empty list of golds."""
    return max((float(metric(pred, g)) for g in _golds(gold)), default=0.0)


# --------------------------------------------------------------------------------------------------
# Extraction


def extract_answer(text: str | None) -> str | None:
    """The answer after the answer marker (method.md §5).

    The text is lower-cased; for the prefixes ``answer:``, ``the answer is:``, ``final answer is:``
    in that order, the first prefix that occurs wins and the text after its **last** occurrence,
    stripped, is the answer.

    Returns
    -------
    str or None
        The lower-cased answer, or ``None`` when no prefix occurs or nothing follows the last
        occurrence of the winning prefix.
    """
    if not text:
        return None
    low = text.lower()
    for prefix in ANSWER_PREFIXES:
        pos = low.rfind(prefix)
        if pos >= 0:
            ans = low[pos + len(prefix) :].strip()
            return ans or None
    return None


def marker_contexts(template: str | None, marker: re.Pattern = _PROBE_MARKER_RE) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """The words around every answer marker that a prompt template writes itself.

    A model that repeats its instructions (``... a final sentence that begins with the words "The
    answer is" followed by the correct answer.``) produces a marker that is no answer. This function
    records, for each marker in the template's literal text (the text outside ``{fields}``), the
    lower-cased words right before and right after it (at most :data:`ECHO_CONTEXT_WORDS` each; a
    ``{field}`` ends the context, since the words beyond it are not adjacent in the prompt).

    Parameters
    ----------
    template : str or None
        A ``str.format`` prompt template (``{{`` / ``}}`` are literal braces); None gives ``[]``.
    marker : re.Pattern
        The marker, matched on lower-cased text (default: the probe's ``the answer is`` with an
        optional colon).

    Returns
    -------
    list of (tuple of str, tuple of str)
        ``(words_before, words_after)`` per marker occurrence in the template, in template order.
    """
    if not template:
        return []
    out = []
    for literal in _template_literals(template):
        low = literal.lower()
        for m in marker.finditer(low):
            before = tuple(_WORD_RE.findall(low[: m.start()])[-ECHO_CONTEXT_WORDS:])
            after = tuple(_WORD_RE.findall(low[m.end() :])[:ECHO_CONTEXT_WORDS])
            out.append((before, after))
    return out


def _template_literals(template: str) -> list[str]:
    try:
        return [lit for lit, _, _, _ in string.Formatter().parse(template)]
    except ValueError:  # not a valid format string: take it as plain text
        return [template]


def template_word_runs(template: str | None, n: int = ECHO_QUOTE_WORDS) -> frozenset[tuple[str, ...]]:
    """Every run of ``n`` consecutive lower-cased words in the template's literal text.

    The text outside ``{fields}`` is ours (instructions), so a capture that begins with one of these
    runs quotes the prompt (observed: ``"The answer is in each step, cite the passage of the document
    ..."``). A field breaks a run: the words around ``{context}`` are not adjacent in the prompt, and
    the fields themselves (question, document, gold answer) are never matched.
    """
    if not template:
        return frozenset()
    runs = set()
    for literal in _template_literals(template):
        words = _WORD_RE.findall(literal.lower())
        runs.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return frozenset(runs)


def is_prompt_echo(low: str, match: re.Match, contexts: Sequence[tuple[tuple[str, ...], tuple[str, ...]]],
                   quotes: frozenset[tuple[str, ...]] = frozenset()) -> bool:
    """Whether the marker ``match`` in the lower-cased text ``low`` repeats a marker of the prompt.

    True when the words right before the marker equal the words before a template marker, or the
    words right after it equal the words after one (:func:`marker_contexts`); a side with fewer than
    2 words in the template is not used (a single word is too weak a sign of an echo). Also True
    when the first :data:`ECHO_QUOTE_WORDS` words after the marker are one of ``quotes`` (runs of
    the template's own text, :func:`template_word_runs`): the capture quotes the instructions.
    """
    if not contexts and not quotes:
        return False
    window = 40 * max(ECHO_CONTEXT_WORDS, ECHO_QUOTE_WORDS)
    before = tuple(_WORD_RE.findall(low[max(0, match.start() - window) : match.start()]))
    after = tuple(_WORD_RE.findall(low[match.end() : match.end() + window]))
    for t_before, t_after in contexts:
        if len(t_before) >= 2 and before[-len(t_before) :] == t_before:
            return True
        if len(t_after) >= 2 and after[: len(t_after)] == t_after:
            return True
    return after[:ECHO_QUOTE_WORDS] in quotes


@functools.lru_cache(maxsize=32)
def _echo_signs(template: str | None) -> tuple[tuple, frozenset]:
    """``(marker contexts, word runs)`` of a template, parsed once per template (the probe filter
    calls :func:`extract_probe_answer` once per probe with the same template)."""
    return tuple(marker_contexts(template)), template_word_runs(template)


def extract_probe_answer(text: str | None, template: str | None = None) -> str | None:
    """The answer of a probe chain of thought: what follows the last ``the answer is`` (method.md §2).

    Fixes the reference's regex ``the answer is (.*)`` (§9): an optional colon is allowed
    (``"The answer is: X"``), the **last** marker is used, and ``is`` must end a word (``"the answer
    isn't"`` is no marker). The capture runs to the end of its line after skipping whitespace (so
    ``"The answer is:\\nX"`` gives ``"x"``).

    Parameters
    ----------
    text : str or None
        The model's output.
    template : str, optional
        The probe prompt template the output answers. Markers that repeat one of the template's own
        markers with its surrounding words (an echo of the instructions, :func:`is_prompt_echo`), and
        markers whose capture begins with :data:`ECHO_QUOTE_WORDS` words of the template's own text
        (a quote of the instructions, :func:`template_word_runs`), are ignored, so an echoed
        instruction is never taken as the answer. The default template ends with such an instruction
        ("... begins with the words "The answer is" followed by the correct answer."), as the
        paper's does ("End your reasoning with `The answer is` followed by the correct answer.").

    Returns
    -------
    str or None
        The lower-cased, stripped capture; ``None`` without a (non-echo) marker or when the capture
        is empty.
    """
    if not text:
        return None
    low = text.lower()
    contexts, quotes = _echo_signs(template)
    last = None
    for m in _PROBE_MARKER_RE.finditer(low):
        if not is_prompt_echo(low, m, contexts, quotes):
            last = m
    if last is None:
        return None
    cap = _PROBE_CAPTURE_RE.match(low, last.end()).group(1).strip()
    return cap or None


def probe_matches(probe_text: str | None, gold: Gold, mode: str = "char", template: str | None = None) -> bool:
    """Whether a probe chain of thought reaches the gold answer (method.md §2, keep/drop test).

    True when the extracted probe answer and a gold answer, both normalized and non-empty, contain
    one another (either direction). ``mode="token"`` uses contiguous token containment instead of
    character substrings. ``template``: the probe template, whose echoed markers are ignored
    (:func:`extract_probe_answer`).
    """
    pred = extract_probe_answer(probe_text, template)
    if pred is None:
        return False
    npred = normalize_answer(pred)
    if not npred:
        return False
    contains = _contains_fn(mode)
    for g in _golds(gold):
        ng = normalize_answer(g)
        if ng and (contains(npred, ng) or contains(ng, npred)):
            return True
    return False


# --------------------------------------------------------------------------------------------------
# Metrics on one (pred, gold) pair


def _contains_token(hay: str, needle: str) -> bool:
    h, n = hay.split(), needle.split()
    if not n:
        return False
    return any(h[i : i + len(n)] == n for i in range(len(h) - len(n) + 1))


def _contains_char(hay: str, needle: str) -> bool:
    return bool(needle) and needle in hay


def _contains_fn(mode: str) -> Callable[[str, str], bool]:
    if mode == "char":
        return _contains_char
    if mode == "token":
        return _contains_token
    raise ValueError(f"subem mode must be one of {SUBEM_MODES}, got {mode!r}")


def _em_one(pred: str | None, gold: str) -> float:
    if pred is None:
        return 0.0
    ng = normalize_answer(gold)
    return float(bool(ng) and normalize_answer(pred) == ng)


def _f1_one(pred: str | None, gold: str) -> float:
    if pred is None:
        return 0.0
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not p or not g:
        return 0.0
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def exact_match(pred: str | None, gold: Gold) -> float:
    """1.0 when the normalized prediction equals a normalized (non-empty) gold answer, else 0.0."""
    return best_over_golds(_em_one, pred, gold)


def sub_exact_match(pred: str | None, gold: Gold, mode: str = "char") -> float:
    """1.0 when a normalized (non-empty) gold answer is contained in the normalized prediction.

    Parameters
    ----------
    pred : str or None
        Prediction (``None`` scores 0).
    gold : str or sequence of str
        Gold answer(s); the max over golds is returned.
    mode : {"char", "token"}
        ``"char"``: substring of characters (paper); ``"token"``: contiguous run of tokens.
    """
    contains = _contains_fn(mode)

    def one(p: str | None, g: str) -> float:
        if p is None:
            return 0.0
        return float(contains(normalize_answer(p), normalize_answer(g)))

    return best_over_golds(one, pred, gold)


def f1_score(pred: str | None, gold: Gold) -> float:
    """Token-level F1 of the normalized strings, in [0, 1]; 0.0 when either side has no token."""
    return best_over_golds(_f1_one, pred, gold)


# --------------------------------------------------------------------------------------------------
# Rewards and per-sample scores


def rollout_reward(output: str, gold: Gold, subem_mode: str = "char") -> float:
    """UCB rollout reward (method.md §4): ``(SubEM(whole output) + F1(extracted answer)) / 2``.

    F1 is 0 when no answer marker is found. In [0, 1].
    """
    return (sub_exact_match(output, gold, subem_mode) + f1_score(extract_answer(output), gold)) / 2


def strict_reward(output: str, gold: Gold, subem_mode: str = "char") -> float:
    """Pair-selection reward (method.md §6): ``(SubEM(extracted) + F1(extracted)) / 2``.

    0 without an answer marker. In [0, 1].
    """
    ans = extract_answer(output)
    if ans is None:
        return 0.0
    return (sub_exact_match(ans, gold, subem_mode) + f1_score(ans, gold)) / 2


def score_prediction(output: str, gold: Gold, subem_mode: str = "char") -> dict:
    """Evaluation metrics of one model output on its extracted answer (method.md §5, §8).

    Returns
    -------
    dict
        ``em``, ``f1``, ``subem`` (in ``subem_mode``), ``subem_char``, ``subem_token`` (both
        variants, for reporting), all floats in [0, 1] and all 0 without an answer marker, and
        ``pred``: the extracted answer or ``None``.
    """
    ans = extract_answer(output)
    sub = {m: sub_exact_match(ans, gold, m) for m in SUBEM_MODES}
    _contains_fn(subem_mode)  # validate the mode
    return {
        "em": exact_match(ans, gold),
        "f1": f1_score(ans, gold),
        "subem": sub[subem_mode],
        "subem_char": sub["char"],
        "subem_token": sub["token"],
        "pred": ans,
    }

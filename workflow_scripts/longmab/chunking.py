"""Chunking of a long context into overlapping token-budgeted chunks (method.md §1).

The chunk boundaries are those of the reference implementation (NEUIR/LongMab-PO at ``de8ab9a``,
``src/syn_po_data/gen_probe.py``, ``llmDataset.chunk_docs``); ``tests/unit/test_golden.py`` checks
them against the reference's recorded chunks (``../shared/golden/chunking.jsonl.gz``) and
``docs/fidelity.md`` lists the results and every deliberate difference.

Reference behaviour, reproduced:

- **Fragments.** The context is cut after *every* delimiter character of ``! ? , . ;`` and
  ``。 ， ！ ？``: a fragment is the text since the previous delimiter plus one delimiter. The
  whitespace after a delimiter therefore *begins* the next fragment (``"One. Two."`` ->
  ``"One."``, ``" Two."``) and a run of delimiters gives one fragment per character
  (``"Wait... what?!"`` -> ``"Wait."``, ``"."``, ``"."``, ``" what?"``, ``"!"``).
- **Closing a chunk.** Its length is the token count of the joined string of its *new* fragments
  (the overlap is not part of it). It closes at the first fragment where that count reaches
  ``chunk_size - overlap_len``, or at the last fragment. ``overlap_len`` is the sum of the
  per-fragment token counts of the ``overlap_fragments`` fragments that end the previous chunk.
- **Overlap.** A chunk starts ``overlap_fragments`` fragments before its first new fragment, but only
  when that first new fragment's index is greater than ``overlap_fragments`` (so the second chunk has
  no overlap when the first one holds <= 2 fragments).
- **Final merge.** The last chunk is appended to the previous one when its fragment count, overlap
  fragments *included*, is below ``min_fragments``. With the defaults (2 and 2) this happens only
  when no overlap applies, i.e. right after a first chunk of <= 2 fragments.

Deliberate differences from the reference (docs/fidelity.md, method.md §9):

- Text after the last delimiter is kept: a tail with non-whitespace text is one more fragment, a
  whitespace-only tail is appended to the last fragment. The reference drops both.
- An empty or whitespace-only context has no chunks (the reference returns ``[""]`` / ``[" "]``).
- Linear time. The reference re-tokenizes the growing chunk string after every fragment (quadratic in
  the chunk length). Here every fragment is tokenized once; prefix sums of those counts predict the
  closing fragment and a few exact counts of joined candidate strings (``count_tokens(text[a:b])``)
  confirm the first fragment that reaches the budget, so each chunk costs O(1) exact counts of
  chunk-sized strings. The exact count is assumed not to decrease when a fragment is appended (a BPE
  merge across the boundary can only make the joined count smaller than the sum of the parts, never
  smaller than the count of a prefix, in every case measured).
- A merged final piece adds only its new fragments (the reference appends its overlap fragments a
  second time, which only happens with ``min_fragments > overlap_fragments + 1``), so every chunk is
  an exact substring ``text[start:end]`` of the context.
- ``count_tokens`` is called as given; the pipeline passes a count without special tokens. The
  reference calls ``tokenizer.encode(s)``, which adds a BOS token per call for tokenizers that add
  one (Llama-3.1; not SmolLM2 or Qwen2.5): there each of its counts is 1 higher, and its chunks close
  about 3 tokens earlier than ours.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Sequence

#: Fragment delimiters: ASCII ``! ? , . ;`` and CJK full-width ``。 ， ！ ？``.
DELIMITERS = "!?,.;。，！？"

# A fragment: any run of non-delimiters, then exactly one delimiter (the reference's re.split with
# one capture group per delimiter character).
_FRAGMENT_RE = re.compile(r"[^!?,.;。，！？]*[!?,.;。，！？]")
_PASSAGE_RE = re.compile(r"^Passage (\d+):", re.MULTILINE)

#: Exact counts tried by the estimate-guided search of one chunk's closing fragment before it falls
#: back to bisection (a bound on the work when the estimate is poor; it never changes the result).
_GUIDED_PROBES = 6


def fragment_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the fragments of ``text`` (reference splitting, tail kept).

    Parameters
    ----------
    text : str
        The context.

    Returns
    -------
    list of (int, int)
        ``(start, end)`` character offsets, contiguous and covering ``text`` exactly: the first
        start is 0, each end is the next start, the last end is ``len(text)``. Every fragment but the
        last ends with one delimiter. ``[]`` for an empty text; ``[(0, len(text))]`` for a text
        without a delimiter.
    """
    spans = [(m.start(), m.end()) for m in _FRAGMENT_RE.finditer(text)]  # contiguous from 0
    pos = spans[-1][1] if spans else 0
    if pos < len(text):
        if spans and not text[pos:].strip():
            spans[-1] = (spans[-1][0], len(text))  # whitespace-only tail: part of the last fragment
        else:
            spans.append((pos, len(text)))  # text after the last delimiter (the reference drops it)
    return spans


def split_fragments(text: str) -> list[str]:
    """Split ``text`` into clause fragments, each ending with one delimiter (reference splitting).

    Whitespace after a delimiter begins the next fragment; each character of a delimiter run is a
    fragment of its own. Text after the last delimiter is kept (a fragment of its own, or appended to
    the last fragment when it is whitespace only). ``"".join(split_fragments(text)) == text`` always
    holds.

    Parameters
    ----------
    text : str
        The context.

    Returns
    -------
    list of str
        The fragments in document order; ``[]`` for ``""``; ``[text]`` when there is no delimiter.
    """
    return [text[s:e] for s, e in fragment_spans(text)]


def _close_index(
    text: str,
    frags: Sequence[tuple[int, int]],
    prefix: Sequence[int],
    first: int,
    budget: int,
    count_tokens: Callable[[str], int],
) -> int:
    """Index of the fragment that closes the chunk whose new fragments start at ``first``.

    The first ``i >= first`` with ``count_tokens(text[frags[first].start : frags[i].end]) >=
    budget``, else the last fragment. ``prefix`` holds prefix sums of the per-fragment counts; the
    joined count is about their difference minus the merges across fragment boundaries, so the search
    probes where that estimate (corrected by every exact count seen) reaches ``budget``, then
    bisects between the last probe below the budget and the first one at or above it.
    """
    last = len(frags) - 1
    if budget <= 0:
        return first  # any non-empty string reaches a budget <= 0
    a = frags[first][0]
    lo, hi = first - 1, last + 1  # exact count < budget at lo (or lo == first - 1); >= budget at hi
    shift = 0  # estimated tokens saved by merges across fragment boundaries (sum - joined count)
    probes = 0
    while hi - lo > 1:
        if probes < _GUIDED_PROBES:
            # first i with prefix[i + 1] - prefix[first] - shift >= budget, kept strictly in (lo, hi)
            i = bisect_left(prefix, prefix[first] + shift + budget, lo=first + 1) - 1
            i = min(max(i, lo + 1), hi - 1)
        else:
            i = (lo + hi) // 2
        probes += 1
        joined = int(count_tokens(text[a : frags[i][1]]))
        if joined >= budget:
            hi = i
        else:
            lo = i
        shift = max(0, prefix[i + 1] - prefix[first] - joined)
    return min(hi, last)


def chunk_spans(
    text: str,
    count_tokens: Callable[[str], int],
    chunk_size: int,
    overlap_fragments: int = 2,
    min_fragments: int = 2,
) -> list[tuple[int, int]]:
    """Character spans of the chunks of ``text`` (method.md §1, the reference's boundaries).

    Algorithm (the reference's ``chunk_docs``, in linear time; see the module docstring):

    1. ``first = 0`` (first new fragment), ``overlap_len = 0``.
    2. The chunk closes at the first fragment ``i >= first`` where
       ``count_tokens(joined fragments first..i) >= chunk_size - overlap_len``, or at the last one.
    3. If ``i + 1 > overlap_fragments``: ``overlap_len = sum of count_tokens(fragment j)`` for the last
       ``overlap_fragments`` fragments ``j <= i`` (otherwise it keeps its value).
    4. The chunk starts at ``first - overlap_fragments`` when it is not the first chunk and
       ``first > overlap_fragments``, else at ``first``.
    5. If it is the last fragment's chunk, not the first chunk, and holds fewer than
       ``min_fragments`` fragments (overlap included), it is merged into the previous chunk;
       otherwise it is a new chunk. ``first = i + 1``; repeat from 2 while fragments remain.

    Parameters
    ----------
    text : str
        The context.
    count_tokens : callable str -> int
        Token count of a string, without special tokens (the pipeline passes
        ``len(tokenizer.encode(s, add_special_tokens=False))``). Called once per fragment and a few
        times per chunk on a chunk-sized substring.
    chunk_size : int
        Target chunk length in tokens (paper default 1500). The new fragments of a chunk reach
        ``chunk_size - overlap_len`` tokens; with its overlap a chunk holds about ``chunk_size``.
        A single fragment longer than that forms a chunk on its own (with its overlap).
    overlap_fragments : int, default 2
        Fragments repeated at the start of each chunk after the first.
    min_fragments : int, default 2
        A final piece with fewer fragments (overlap included) is merged into the previous chunk.

    Returns
    -------
    list of (int, int)
        ``(start, end)`` character offsets; chunk ``j`` is ``text[start:end]``. Ends increase; each
        chunk starts at or before the end of the previous one; the first start is 0 and the last end
        is ``len(text)``. A start can lie before the previous chunk's start (after chunks of one
        fragment the overlap reaches further back; reference behaviour at tiny chunk sizes). ``[]``
        for an empty or whitespace-only text.

    Raises
    ------
    ValueError
        ``chunk_size <= 0``, or a negative ``overlap_fragments`` / ``min_fragments``.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if overlap_fragments < 0:
        raise ValueError(f"overlap_fragments must be >= 0, got {overlap_fragments}")
    if min_fragments < 0:
        raise ValueError(f"min_fragments must be >= 0, got {min_fragments}")
    if not text.strip():
        return []
    frags = fragment_spans(text)
    n = len(frags)
    counts = [int(count_tokens(text[s:e])) for s, e in frags]
    prefix = [0]
    for c in counts:
        prefix.append(prefix[-1] + c)

    chunks: list[list[int]] = []  # [first fragment, last fragment] (inclusive)
    first = 0
    overlap_len = 0
    while first < n:
        i = _close_index(text, frags, prefix, first, chunk_size - overlap_len, count_tokens)
        if i + 1 > overlap_fragments:
            overlap_len = prefix[i + 1] - prefix[i + 1 - overlap_fragments]
        start = first - overlap_fragments if chunks and first > overlap_fragments else first
        if chunks and i == n - 1 and (i - start + 1) < min_fragments:
            chunks[-1][1] = i  # short final piece: its new fragments join the previous chunk
        else:
            chunks.append([start, i])
        first = i + 1
    return [(frags[a][0], frags[b][1]) for a, b in chunks]


def chunk_spans_quadratic(
    text: str,
    count_tokens: Callable[[str], int],
    chunk_size: int,
    overlap_fragments: int = 2,
    min_fragments: int = 2,
) -> list[tuple[int, int]]:
    """:func:`chunk_spans` computed the reference's way: re-counting the growing chunk string after
    every fragment (quadratic in the chunk length).

    The same boundaries as :func:`chunk_spans` by construction of the algorithm; kept as the
    executable statement of the reference loop for tests (the fast search must agree with it) and for
    ``bench/chunking.py`` (the speed ratio). Same parameters and return value.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if not text.strip():
        return []
    frags = fragment_spans(text)
    n = len(frags)
    chunks: list[list[int]] = []
    first, overlap_len = 0, 0
    for i in range(n):
        joined = text[frags[first][0] : frags[i][1]]  # the reference's temp_text
        if count_tokens(joined) >= chunk_size - overlap_len or i == n - 1:
            if i + 1 > overlap_fragments:
                overlap_len = sum(count_tokens(text[s:e]) for s, e in frags[i + 1 - overlap_fragments : i + 1])
            start = first - overlap_fragments if chunks and first > overlap_fragments else first
            if chunks and i == n - 1 and (i - start + 1) < min_fragments:
                chunks[-1][1] = i
            else:
                chunks.append([start, i])
            first = i + 1
    return [(frags[a][0], frags[b][1]) for a, b in chunks]


#: Alias of :func:`chunk_spans`.
chunk_text_with_spans = chunk_spans


def chunk_text(
    text: str,
    count_tokens: Callable[[str], int],
    chunk_size: int,
    overlap_fragments: int = 2,
    min_fragments: int = 2,
) -> list[str]:
    """Chunks of ``text`` as strings; see :func:`chunk_spans` for the algorithm and parameters.

    Returns
    -------
    list of str
        Exact substrings of ``text`` in document order (consecutive chunks overlap by up to
        ``overlap_fragments`` fragments). ``[]`` for an empty or whitespace-only text; ``[text]``
        without any delimiter.
    """
    return [text[s:e] for s, e in chunk_spans(text, count_tokens, chunk_size, overlap_fragments, min_fragments)]


def passage_spans(text: str) -> list[tuple[int, int, int]]:
    """Passages of a context formatted as ``Passage i:\\n<text>`` blocks.

    Parameters
    ----------
    text : str
        The context; a header is ``Passage <int>:`` at the start of a line.

    Returns
    -------
    list of (int, int, int)
        ``(i, body_start, body_end)`` per header in document order: ``i`` is the number written in
        the header; the body runs from the colon to the next header (or the end of the text),
        leading and trailing whitespace excluded (``body_start == body_end`` for an empty body).
    """
    heads = list(_PASSAGE_RE.finditer(text))
    out = []
    for k, m in enumerate(heads):
        end = heads[k + 1].start() if k + 1 < len(heads) else len(text)
        seg = text[m.end() : end]
        body_start = m.end() + len(seg) - len(seg.lstrip())
        body_end = m.end() + len(seg.rstrip())
        out.append((int(m.group(1)), body_start, max(body_start, body_end)))
    return out


def passages_in_span(text: str, start: int, end: int) -> list[int]:
    """Indices ``i`` of the ``Passage i:`` blocks whose body overlaps ``text[start:end]``.

    A span that covers only a header (``"Passage 3:"``) and none of its body does not count.

    Parameters
    ----------
    text : str
        The context.
    start, end : int
        Character offsets of the span (``end`` exclusive).

    Returns
    -------
    list of int
        Passage numbers as written in the headers, in document order (empty without headers).
    """
    return [i for i, bs, be in passage_spans(text) if bs < end and start < be and bs < be]


def chunk_passages(text: str, spans: Sequence[tuple[int, int]]) -> list[list[int]]:
    """:func:`passages_in_span` for every chunk span (the probe row's ``chunk_passages``)."""
    passages = passage_spans(text)
    return [[i for i, bs, be in passages if bs < e and s < be and bs < be] for s, e in spans]

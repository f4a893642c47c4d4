"""Chunking of a long context into overlapping token-budgeted chunks (method.md §1).

A context is cut into clause *fragments* at ``! ? , . ;`` and their CJK full-width forms
``。 ， ！ ？``; fragments are then accumulated into chunks of about ``chunk_size`` tokens, each new
chunk starting ``overlap_fragments`` fragments before the end of the previous one.

Differences from the reference implementation (deliberate, see method.md §9):

- Text after the last delimiter is kept as a final fragment (the reference drops it).
- Every fragment is tokenized once and chunk lengths are sums of fragment lengths (linear time).
  The reference re-tokenizes the growing chunk string after every fragment (quadratic). A sum of
  per-fragment counts approximates the token count of the joined string: sub-word merges across a
  fragment boundary can make it differ by about one token per boundary. Pass a ``count_tokens`` that
  adds no special tokens (e.g. ``len(tok.encode(s, add_special_tokens=False))``).
- Chunks are exact substrings of the original text (``text[start:end]``), whitespace included, so a
  chunk can be mapped back to character offsets and to the ``Passage i:`` it covers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

#: Fragment delimiters: ASCII ``! ? , . ;`` and CJK full-width ``。 ， ！ ？``.
DELIMITERS = "!?,.;。，！？"

# A fragment: any run of non-delimiters, then a run of delimiters ("..." or "?!" stay together),
# then the whitespace that follows (so the next fragment starts with its first word).
_FRAGMENT_RE = re.compile(r"[^!?,.;。，！？]*[!?,.;。，！？]+\s*")
_PASSAGE_RE = re.compile(r"^Passage (\d+):", re.MULTILINE)


def fragment_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the fragments of ``text``.

    Parameters
    ----------
    text : str
        The context.

    Returns
    -------
    list of (int, int)
        ``(start, end)`` character offsets, contiguous and covering ``text`` exactly:
        the first start is 0, each end is the next start, the last end is ``len(text)``.
        Empty for an empty text.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in _FRAGMENT_RE.finditer(text):
        # finditer matches are contiguous: [^D]* can always absorb what lies between two matches.
        spans.append((m.start(), m.end()))
        pos = m.end()
    if pos < len(text):
        # Text after the last delimiter is kept (the reference drops it).
        spans.append((pos, len(text)))
    return spans


def split_fragments(text: str) -> list[str]:
    """Split ``text`` into clause fragments, each delimiter kept at the end of its fragment.

    A run of delimiters (``"..."``, ``"?!"``) stays together, and the whitespace after a delimiter
    belongs to the fragment it ends. Text after the last delimiter is kept as a final fragment.
    ``"".join(split_fragments(text)) == text`` always holds.

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


def chunk_spans(
    text: str,
    count_tokens: Callable[[str], int],
    chunk_size: int,
    overlap_fragments: int = 2,
    min_fragments: int = 2,
) -> list[tuple[int, int]]:
    """Character spans of the chunks of ``text`` (method.md §1).

    Algorithm (reference behaviour, with linear token counting):

    1. The first chunk starts at fragment 0 with no overlap (``overlap_len = 0``).
    2. New fragments are appended while the summed token count of the *new* fragments is below
       ``chunk_size - overlap_len``; the fragment that reaches the budget (``>=``) is included and
       closes the chunk, as does the last fragment of the text.
    3. The next chunk starts ``overlap_fragments`` fragments before the end of the previous one;
       ``overlap_len`` is the summed token count of those carried-over fragments.
    4. If the last chunk has fewer than ``min_fragments`` new fragments, its new fragments are
       appended to the previous chunk instead (no duplicated overlap).

    Parameters
    ----------
    text : str
        The context.
    count_tokens : callable str -> int
        Token count of one fragment (called once per fragment).
    chunk_size : int
        Target chunk length in tokens (paper default 1500). A chunk may exceed it by the length of
        its closing fragment; a single fragment longer than ``chunk_size`` forms a chunk on its own.
    overlap_fragments : int, default 2
        Fragments repeated at the start of each chunk after the first.
    min_fragments : int, default 2
        A final piece with fewer new fragments is merged into the previous chunk.

    Returns
    -------
    list of (int, int)
        ``(start, end)`` character offsets; chunk ``j`` is ``text[start:end]``. Starts and ends are
        non-decreasing; the first start is 0 and the last end is ``len(text)``. ``[]`` for ``""``.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if overlap_fragments < 0:
        raise ValueError(f"overlap_fragments must be >= 0, got {overlap_fragments}")
    if min_fragments < 0:
        raise ValueError(f"min_fragments must be >= 0, got {min_fragments}")
    frags = fragment_spans(text)
    n = len(frags)
    if n == 0:
        return []
    counts = [int(count_tokens(text[s:e])) for s, e in frags]

    chunks: list[list[int]] = []  # [first fragment, end fragment (exclusive)]
    start = 0  # first fragment of the current chunk (overlap included)
    new_start = 0  # first new fragment of the current chunk
    overlap_len = 0
    while new_start < n:
        budget = chunk_size - overlap_len
        acc = 0
        j = new_start
        while j < n:
            acc += counts[j]
            j += 1
            if acc >= budget:
                break
        if chunks and j == n and (j - new_start) < min_fragments:
            chunks[-1][1] = j  # short tail: append its new fragments to the previous chunk
        else:
            chunks.append([start, j])
        start = max(start, j - overlap_fragments)
        new_start = j
        overlap_len = sum(counts[start:j])
    return [(frags[a][0], frags[b - 1][1]) for a, b in chunks]


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
        Exact substrings of ``text`` in document order (consecutive chunks overlap by
        ``overlap_fragments`` fragments). ``[]`` for ``""``; ``[text]`` without any delimiter.
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

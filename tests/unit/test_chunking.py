"""Chunking (method.md §1): the reference's boundaries (see also test_golden.py), in linear time.

Most expectations use a whitespace word-count tokenizer so that they can be computed by hand; the
reference's loop itself (:func:`chunk_spans_quadratic`) is the oracle of the randomized tests.
"""

import itertools
import random
import re

import pytest
from longmab.chunking import (
    chunk_passages,
    chunk_spans,
    chunk_spans_quadratic,
    chunk_text,
    chunk_text_with_spans,
    fragment_spans,
    passages_in_span,
    split_fragments,
)


def words(s: str) -> int:
    return len(s.split())


def punct_runs(s: str) -> int:
    """A tokenizer whose count of a joined string is below the sum of its parts: a run of punctuation
    is one token ("." + "." -> ".."), like a BPE merge across a fragment boundary."""
    return len(re.findall(r"\w+|[^\w\s]+", s))


# --------------------------------------------------------------------------------------------------
# Fragments (the reference's splitting: one delimiter per fragment, whitespace begins the next one)


def test_split_one_delimiter_per_fragment_whitespace_leads():
    text = "Hi! How are you? Fine, thanks; bye."
    assert split_fragments(text) == ["Hi!", " How are you?", " Fine,", " thanks;", " bye."]


def test_split_keeps_text_after_last_delimiter():
    # The reference drops "and more"; we keep it as a final fragment.
    assert split_fragments("One. Two, and more") == ["One.", " Two,", " and more"]


def test_split_whitespace_tail_joins_the_last_fragment():
    assert split_fragments("One. Two.\n\n  ") == ["One.", " Two.\n\n  "]


def test_split_delimiter_runs_one_fragment_per_character():
    # As the reference's re.split with a capture group: "Wait... what?!" -> Wait. | . | . | what? | !
    assert split_fragments("Wait... what?! ok") == ["Wait.", ".", ".", " what?", "!", " ok"]
    assert split_fragments("...") == [".", ".", "."]


def test_split_cjk_and_decimals():
    assert split_fragments("我喜欢猫。你呢？好的，再见！") == ["我喜欢猫。", "你呢？", "好的，", "再见！"]
    assert split_fragments("U.S. grew 3.5%.") == ["U.", "S.", " grew 3.", "5%."]


def test_split_empty_and_no_delimiter():
    assert split_fragments("") == []
    assert split_fragments("no delimiter here") == ["no delimiter here"]
    assert split_fragments("  \n ") == ["  \n "]


def test_fragments_reassemble_exactly():
    rnd = random.Random(0)
    alphabet = list("abc ,.;!?\n。，！？") + ["  ", "Passage 1:\n"]
    for _ in range(300):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 60)))
        frags = split_fragments(text)
        assert "".join(frags) == text
        assert all(frags)  # no empty fragment
        for f in frags[:-1]:
            assert f[-1] in "!?,.;。，！？" and not any(c in "!?,.;。，！？" for c in f[:-1])
        spans = fragment_spans(text)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))


# --------------------------------------------------------------------------------------------------
# Chunks: worked examples (fragments "a b." " c d." " e f." " g h." " i j.", 2 words each)


TEXT5 = "a b. c d. e f. g h. i j."


def test_chunk_worked_example_with_overlap():
    # chunk_size 6, overlap 2 fragments:
    # c1: budget 6: f0 (2) f0f1 (4) f0..f2 (6 >= 6) -> f0..f2; overlap_len = |f1| + |f2| = 4
    # c2: first new f3; 3 > 2 so it starts at f1; budget 6 - 4 = 2: f3 (2 >= 2) -> f1..f3
    # c3: first new f4 (last); starts at f2 -> f2..f4 = 3 fragments, not < 2: kept.
    assert chunk_text(TEXT5, words, 6) == ["a b. c d. e f.", " c d. e f. g h.", " e f. g h. i j."]


def test_no_overlap_while_start_index_le_overlap():
    # chunk_size 3: c1 = f0f1 (4 >= 3). c2's first new fragment is f2: 2 > 2 is false, so no overlap,
    # and overlap_len stays 0 (it is only computed when the closing index i has i + 1 > 2):
    # budget 3: f2f3 (4) -> f2..f3; overlap_len = 4. c3: f4 starts at f2; budget -1 -> f2..f4.
    assert chunk_text(TEXT5, words, 3) == ["a b. c d.", " e f. g h.", " e f. g h. i j."]


def test_first_chunk_never_nested_in_the_second():
    # Issue #9.3: "One. Two. Three four five", one token per character, chunk size 4: the first
    # chunk is not repeated inside the second (no overlap while the start index is <= 2).
    assert chunk_text("One. Two. Three four five", len, 4) == ["One.", " Two. Three four five"]


def test_final_merge_counts_the_overlap_fragments():
    # 7 one-word fragments, chunk_size 4: c1 f0..f3; c2 overlap f2 f3, budget 2 -> f2..f5;
    # c3 = overlap f4 f5 + new f6 = 3 fragments: NOT merged (the reference counts the overlap).
    assert chunk_text("a, b, c, d, e, f, g.", words, 4) == ["a, b, c, d,", " c, d, e, f,", " e, f, g."]
    # With min_fragments 4 the 3-fragment piece is merged; only its new fragment is appended.
    assert chunk_text("a, b, c, d, e, f, g.", words, 4, min_fragments=4) == ["a, b, c, d,", " c, d, e, f, g."]


def test_final_merge_without_overlap():
    # c1 f0 (2 >= 2); c2 f1 (2 >= 2), no overlap (1 <= 2); c3 = f2 alone (2 <= 2: no overlap),
    # 1 fragment < 2 -> appended to c2. The only way the merge fires with the defaults.
    assert chunk_text("a b. c d. e.", words, 2) == ["a b.", " c d. e."]


def test_start_moves_back_after_one_fragment_chunks():
    # Reference behaviour at tiny sizes: chunks "x." | "." | "." (no overlap while the start index is
    # <= 2), then the 2-fragment overlap starts the 4th chunk at the 2nd fragment, before the 3rd's start.
    assert chunk_text("x... y.", len, 1) == ["x.", ".", ".", ".. y."]


def test_chunk_keeps_tail_without_delimiter():
    # The tail " i j" is one more fragment; boundaries before it are unchanged.
    assert chunk_text("a b. c d. e f. g h. i j", words, 6) == ["a b. c d. e f.", " c d. e f. g h.", " e f. g h. i j"]


def test_length_is_the_joined_string_not_the_sum_of_fragments():
    # "x... y." fragments: "x." "." "." " y." -> punct_runs 2, 1, 1, 2 (sum 6); joined "x... y." = 3.
    text = "x... y. z."
    assert punct_runs("x... y.") == 4 and sum(map(punct_runs, split_fragments("x... y."))) == 6
    # chunk_size 5: summed counts would close at " y." (6 >= 5); the joined string has 4 < 5 tokens,
    # so the chunk goes on to " z." (joined "x... y. z." = 6 >= 5): one chunk.
    assert chunk_text(text, punct_runs, 5) == [text]
    assert chunk_spans(text, punct_runs, 5) == chunk_spans_quadratic(text, punct_runs, 5)


def test_chunk_cjk_only():
    # char-count tokenizer; fragments "我喜欢猫。"(5) "你呢？"(3) "好的，"(3) "再见！"(3); size 8, overlap 1:
    # c1: 5, 8 >= 8 -> f0,f1; overlap_len 3; c2: 2 > 1 so it starts at f1; budget 5: f2 (3), f2f3 (6) -> f1..f3.
    text = "我喜欢猫。你呢？好的，再见！"
    assert chunk_text(text, len, 8, overlap_fragments=1) == ["我喜欢猫。你呢？", "你呢？好的，再见！"]


def test_chunk_no_delimiter_empty_and_blank():
    text = "one long run of words without any delimiter at all"
    assert chunk_text(text, words, 3) == [text]
    assert chunk_text("", words, 3) == []
    assert chunk_text(" \n ", words, 3) == []  # no content, no arms (the reference returns [" \n "])


def test_chunk_single_chunk_when_text_fits():
    assert chunk_text(TEXT5, words, 100) == [TEXT5]


def test_fragment_longer_than_chunk_size_forms_its_own_chunk():
    # Fragments "a b c d e." (5), " f g." (2), " x." (1); chunk_size 3.
    # c1: f0 alone (5 >= 3). c2: no overlap (1 <= 2); f1 (2), f1f2 (3 >= 3, last) -> 2 fragments: kept.
    assert chunk_text("a b c d e. f g. x.", words, 3) == ["a b c d e.", " f g. x."]


def test_count_tokens_called_linearly():
    """Every fragment is counted once, plus a few chunk-sized strings per chunk: characters passed to
    count_tokens stay a small multiple of the text (the reference's loop grows with the chunk size)."""
    rnd = random.Random(3)
    text = " ".join(rnd.choice(["alpha", "beta,", "gamma.", "delta;", "x!"]) for _ in range(20000))
    fast, slow = [0], [0]

    def counting(box):
        def f(s):
            box[0] += len(s)
            return words(s)
        return f

    spans = chunk_spans(text, counting(fast), 300)
    assert spans == chunk_spans_quadratic(text, counting(slow), 300)
    assert len(spans) > 50
    assert fast[0] < 5 * len(text)
    assert slow[0] > 20 * fast[0]


def test_chunks_are_exact_substrings_with_spans():
    rnd = random.Random(1)
    vocab = ["alpha", "beta", "gamma", "delta", "x", "y"]
    for trial in range(60):
        parts = []
        for _ in range(rnd.randint(1, 80)):
            parts.append(rnd.choice(vocab) + rnd.choice(["", " ", ", ", ". ", "; ", "!\n", "？", "...", "?! "]))
        text = "".join(parts)
        size = rnd.randint(1, 15)
        spans = chunk_spans(text, words, size)
        chunks = chunk_text(text, words, size)
        assert chunks == [text[s:e] for s, e in spans]
        assert spans[0][0] == 0 and spans[-1][1] == len(text)
        for (s0, e0), (s1, e1) in itertools.pairwise(spans):
            # overlapping or touching, ends moving forward, covering everything. A start may move back:
            # after chunks of one fragment the 2-fragment overlap reaches behind the previous start.
            assert s1 <= e0 < e1
        # Without overlap and merging, chunks tile the text exactly.
        assert "".join(chunk_text(text, words, size, overlap_fragments=0, min_fragments=0)) == text


@pytest.mark.parametrize("count", [words, len, punct_runs], ids=["words", "chars", "punct_runs"])
def test_fast_search_equals_the_reference_loop(count):
    """The linear search gives exactly the boundaries of the reference's re-counting loop."""
    rnd = random.Random(hash(count.__name__) % 1000)
    vocab = ["alpha", "be", "gamma", "3", "x", "Passage 2:\n", "我", "é"]
    seps = ["", " ", ", ", ". ", "; ", "!\n", "？", "...", "?! ", ".\n\n", "，"]
    for _ in range(150):
        text = "".join(rnd.choice(vocab) + rnd.choice(seps) for _ in range(rnd.randint(0, 120)))
        size = rnd.choice([1, 2, 3, 5, 8, 13, 40, 200])
        overlap = rnd.choice([0, 1, 2, 3])
        minf = rnd.choice([0, 1, 2, 3])
        assert chunk_spans(text, count, size, overlap, minf) == chunk_spans_quadratic(text, count, size, overlap, minf)


def test_alias_and_validation():
    assert chunk_text_with_spans(TEXT5, words, 6) == chunk_spans(TEXT5, words, 6)
    with pytest.raises(ValueError):
        chunk_text(TEXT5, words, 0)
    with pytest.raises(ValueError):
        chunk_text(TEXT5, words, 5, overlap_fragments=-1)
    with pytest.raises(ValueError):
        chunk_text(TEXT5, words, 5, min_fragments=-1)


# --------------------------------------------------------------------------------------------------
# Passages


CTX = "Passage 1:\nAlpha beta.\n\nPassage 2:\nGamma delta.\n\nPassage 7:\nEpsilon zeta."


def test_passages_in_span_body_overlap():
    s = CTX.index("beta")
    e = CTX.index("Gamma") + 3
    assert passages_in_span(CTX, s, e) == [1, 2]
    assert passages_in_span(CTX, 0, len(CTX)) == [1, 2, 7]
    assert passages_in_span(CTX, CTX.index("zeta"), len(CTX)) == [7]


def test_passages_in_span_header_only_does_not_count():
    h = CTX.index("Passage 2:")
    assert passages_in_span(CTX, h, h + len("Passage 2:\n")) == []
    # The blank line between passage 1 and 2 belongs to neither body.
    assert passages_in_span(CTX, CTX.index("beta.") + 5, h) == []


def test_passages_without_headers():
    assert passages_in_span("no passages here.", 0, 10) == []


def test_chunk_passages_maps_chunks_to_passages():
    spans = chunk_spans(CTX, words, 3, overlap_fragments=0, min_fragments=0)
    chunks = [CTX[s:e] for s, e in spans]
    # Fragments: "Passage 1:\nAlpha beta." (3 words) | "\n\nPassage 2:\nGamma delta." (3) | "\n\nPassage 7:\nEpsilon zeta." (3)
    assert chunks == ["Passage 1:\nAlpha beta.", "\n\nPassage 2:\nGamma delta.", "\n\nPassage 7:\nEpsilon zeta."]
    assert chunk_passages(CTX, spans) == [[1], [2], [7]]

"""Chunking (method.md §1), with a whitespace word-count tokenizer so expectations are hand-computable."""

import itertools
import random

import pytest
from longmab.chunking import (
    chunk_passages,
    chunk_spans,
    chunk_text,
    chunk_text_with_spans,
    fragment_spans,
    passages_in_span,
    split_fragments,
)


def words(s: str) -> int:
    return len(s.split())


# --------------------------------------------------------------------------------------------------
# Fragments


def test_split_keeps_delimiters_and_following_whitespace():
    text = "Hi! How are you? Fine, thanks; bye."
    assert split_fragments(text) == ["Hi! ", "How are you? ", "Fine, ", "thanks; ", "bye."]


def test_split_keeps_text_after_last_delimiter():
    # The reference drops "and more"; we keep it as a final fragment.
    assert split_fragments("One. Two, and more") == ["One. ", "Two, ", "and more"]


def test_split_delimiter_runs_stay_together():
    assert split_fragments("Wait... what?! ok") == ["Wait... ", "what?! ", "ok"]


def test_split_cjk():
    assert split_fragments("我喜欢猫。你呢？好的，再见！") == ["我喜欢猫。", "你呢？", "好的，", "再见！"]


def test_split_empty_and_no_delimiter():
    assert split_fragments("") == []
    assert split_fragments("no delimiter here") == ["no delimiter here"]
    assert split_fragments("  \n ") == ["  \n "]


def test_fragments_reassemble_exactly():
    rnd = random.Random(0)
    alphabet = list("abc ,.;!?\n。，！？") + ["  ", "Passage 1:\n"]
    for _ in range(200):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 60)))
        frags = split_fragments(text)
        assert "".join(frags) == text
        assert all(frags)  # no empty fragment
        spans = fragment_spans(text)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))


# --------------------------------------------------------------------------------------------------
# Chunks: worked examples


TEXT5 = "a b. c d. e f. g h. i j."  # fragments "a b. ", "c d. ", "e f. ", "g h. ", "i j." (2 words each)


def test_chunk_worked_example_with_short_tail_merge():
    # chunk_size 6, overlap 2 fragments:
    # c1: budget 6 - 0 = 6: f0 (2) f1 (4) f2 (6 >= 6) -> f0..f2 = "a b. c d. e f. "
    # c2: starts 2 fragments back (f1); overlap_len = 4; budget 2: f3 (2 >= 2) -> f1..f3
    # c3: starts at f2; overlap_len = 4; budget 2: f4 is the last fragment -> 1 new fragment < 2
    #     -> f4 is appended to c2: "c d. e f. g h. i j."
    assert chunk_text(TEXT5, words, 6) == ["a b. c d. e f. ", "c d. e f. g h. i j."]


def test_chunk_without_merge_when_min_fragments_is_1():
    # As above, but c3 = f2..f4 is kept.
    assert chunk_text(TEXT5, words, 6, min_fragments=1) == ["a b. c d. e f. ", "c d. e f. g h. ", "e f. g h. i j."]


def test_chunk_keeps_tail_without_delimiter():
    assert chunk_text("a b. c d. e f. g h. i j", words, 6) == ["a b. c d. e f. ", "c d. e f. g h. i j"]


def test_chunk_tail_of_two_fragments_is_not_merged():
    # 8 one-word fragments, chunk_size 4:
    # c1: f0..f3 (4 >= 4); c2: overlap f2,f3 (2), budget 2: f4,f5 -> f2..f5;
    # c3: overlap f4,f5, budget 2: f6,f7 (2 >= 2, and last) -> 2 new fragments: kept.
    text = "a, b, c, d, e, f, g, h."
    assert chunk_text(text, words, 4) == ["a, b, c, d, ", "c, d, e, f, ", "e, f, g, h."]
    # With 7 fragments the last piece has one new fragment ("g.") and is merged.
    assert chunk_text("a, b, c, d, e, f, g.", words, 4) == ["a, b, c, d, ", "c, d, e, f, g."]


def test_chunk_cjk_only():
    # char-count tokenizer; fragments "我喜欢猫。"(5) "你呢？"(3) "好的，"(3) "再见！"(3); size 8, overlap 1:
    # c1: 5, 8 >= 8 -> f0,f1; c2: overlap f1 (3), budget 5: f2 (3), f3 (6, last) -> f1..f3.
    text = "我喜欢猫。你呢？好的，再见！"
    assert chunk_text(text, len, 8, overlap_fragments=1) == ["我喜欢猫。你呢？", "你呢？好的，再见！"]


def test_chunk_no_delimiter_and_empty():
    text = "one long run of words without any delimiter at all"
    assert chunk_text(text, words, 3) == [text]
    assert chunk_text("", words, 3) == []


def test_chunk_single_chunk_when_text_fits():
    assert chunk_text(TEXT5, words, 100) == [TEXT5]


def test_fragment_longer_than_chunk_size_forms_its_own_chunk():
    # Fragments "a b c d e. " (5), "f g. " (2), "x." (1); chunk_size 3.
    # c1: f0 alone (5 >= 3). c2: overlap = last 2 fragments of c1 = just f0 (5) -> budget -2 <= 0,
    # so f1 closes it at once: f0,f1. c3: "x." is 1 new fragment at the end -> merged into c2.
    text = "a b c d e. f g. x."
    assert chunk_text(text, words, 3) == ["a b c d e. ", "a b c d e. f g. x."]


def test_count_tokens_called_once_per_fragment():
    calls = []

    def counting(s):
        calls.append(s)
        return words(s)

    chunk_text(TEXT5, counting, 6)
    assert calls == split_fragments(TEXT5)


def test_chunks_are_exact_substrings_with_spans():
    rnd = random.Random(1)
    vocab = ["alpha", "beta", "gamma", "delta", "x", "y"]
    for trial in range(50):
        parts = []
        for _ in range(rnd.randint(1, 80)):
            parts.append(rnd.choice(vocab) + rnd.choice(["", " ", ", ", ". ", "; ", "!\n", "？"]))
        text = "".join(parts)
        size = rnd.randint(1, 15)
        spans = chunk_spans(text, words, size)
        chunks = chunk_text(text, words, size)
        assert chunks == [text[s:e] for s, e in spans]
        assert spans[0][0] == 0 and spans[-1][1] == len(text)
        for (s0, e0), (s1, e1) in itertools.pairwise(spans):
            assert s0 <= s1 <= e0 < e1  # overlapping or touching, moving forward, covering everything
        # Without overlap and merging, chunks tile the text exactly.
        assert "".join(chunk_text(text, words, size, overlap_fragments=0, min_fragments=0)) == text


def test_alias_and_validation():
    assert chunk_text_with_spans(TEXT5, words, 6) == chunk_spans(TEXT5, words, 6)
    with pytest.raises(ValueError):
        chunk_text(TEXT5, words, 0)
    with pytest.raises(ValueError):
        chunk_text(TEXT5, words, 5, overlap_fragments=-1)


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
    # Fragments: "Passage 1:\nAlpha beta.\n\n" (3 words) | "Passage 2:\nGamma delta.\n\n" (3) | "Passage 7:\nEpsilon zeta." (3)
    assert chunks == ["Passage 1:\nAlpha beta.\n\n", "Passage 2:\nGamma delta.\n\n", "Passage 7:\nEpsilon zeta."]
    assert chunk_passages(CTX, spans) == [[1], [2], [7]]

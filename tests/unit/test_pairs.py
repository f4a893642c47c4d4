"""Preference-pair helpers (method.md §6)."""

import numpy as np
from longmab.pairs import (
    build_pair_prompt,
    middle_truncate,
    pair_context_budget,
    select_pair,
)
from longmab.prompts import DEFAULT_TEMPLATES


def rng(seed=0):
    return np.random.default_rng(seed)


def test_select_pair_none_cases():
    assert select_pair([], rng()) is None
    assert select_pair([0.5, 0.5, 0.5], rng()) is None
    assert select_pair([0.0], rng()) is None


def test_select_pair_unique_extremes():
    assert select_pair([0.1, 0.9, 0.3], rng()) == (1, 0)
    assert select_pair(np.array([0.5, 0.0, 1.0, 0.5]), rng()) == (2, 1)


def test_select_pair_ties_are_random_and_seeded():
    rewards = [1.0, 1.0, 0.0, 0.0, 0.5]
    out = [select_pair(rewards, rng(s)) for s in range(30)]
    assert all(c in (0, 1) and r in (2, 3) for c, r in out)
    assert {c for c, _ in out} == {0, 1} and {r for _, r in out} == {2, 3}
    assert [select_pair(rewards, rng(s)) for s in range(30)] == out  # reproducible
    assert all(isinstance(c, int) and isinstance(r, int) for c, r in out)


def test_middle_truncate():
    toks = list(range(10))
    assert middle_truncate(toks, 4) == [0, 1, 8, 9]
    assert middle_truncate(toks, 5) == [0, 1, 8, 9]  # budget // 2 from each end
    assert middle_truncate(toks, 10) == toks
    assert middle_truncate(toks, 12) == toks
    assert middle_truncate(toks, 1) == []  # half = 0: not the whole list (tokens[-0:] pitfall)
    assert middle_truncate(toks, 0) == []
    assert middle_truncate(toks, -7) == []  # the reference misbehaves on a negative budget
    assert middle_truncate((1, 2, 3), 2) == [1, 3]
    assert middle_truncate([], 0) == []


def test_pair_context_budget():
    # 8192 - 32 - 20 - max(300, 500)
    assert pair_context_budget(8192, 20, 300, 500) == 7640
    assert pair_context_budget(100, 10, 5, 3, reserve=0) == 85
    assert pair_context_budget(50, 10, 40, 3) == -32


def test_build_pair_prompt_truncates_middle_of_context_only():
    encode, decode = list, "".join  # one token per character
    context = "0123456789"
    # budget = 41 - 32 - len("q?") - max(len("ab"), len("abc")) = 41 - 32 - 2 - 3 = 4 -> "01" + "89"
    prompt = build_pair_prompt(DEFAULT_TEMPLATES, context, "q?", "ab", "abc", encode, decode, 41)
    assert prompt == DEFAULT_TEMPLATES["answer"].format(context="0189", question="q?")
    # Enough room: the context is kept whole.
    prompt = build_pair_prompt(DEFAULT_TEMPLATES, context, "q?", "ab", "abc", encode, decode, 1000)
    assert prompt == DEFAULT_TEMPLATES["answer"].format(context=context, question="q?")

"""Preference-pair construction helpers (method.md §6).

The rollout responses of a sample are scored with :func:`longmab.metrics.strict_reward`; a random
response among the best becomes *chosen*, a random one among the worst *rejected*. The pair's prompt
is the answer prompt over the full original context, middle-truncated in tokens so that prompt plus
the longer response fit in ``max_prompt_length``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

#: Tokens kept free for the prompt template's own wording (reference value).
RESERVE_TOKENS = 32


def select_pair(rewards: Sequence[float], rng: np.random.Generator) -> tuple[int, int] | None:
    """Pick (chosen, rejected) response indices.

    Parameters
    ----------
    rewards : sequence of float, shape (n_responses,)
        Strict rewards of the responses.
    rng : numpy.random.Generator
        Seeded generator; draws the chosen index uniformly among the arg-maxes, then the rejected
        index uniformly among the arg-mins.

    Returns
    -------
    (int, int) or None
        ``(chosen, rejected)``; ``None`` when there are no rewards or all are equal (max == min).
    """
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if r.size == 0:
        return None
    hi, lo = r.max(), r.min()
    if hi == lo:
        return None
    chosen = int(rng.choice(np.flatnonzero(r == hi)))
    rejected = int(rng.choice(np.flatnonzero(r == lo)))
    return chosen, rejected


def middle_truncate(tokens: Sequence, budget: int) -> list:
    """Keep the head and tail of a token sequence, dropping the middle.

    Parameters
    ----------
    tokens : sequence
        Token ids (or any items), length L.
    budget : int
        Maximum number of tokens to keep.

    Returns
    -------
    list
        ``tokens`` unchanged (as a list) if ``L <= budget``; ``[]`` if ``budget <= 0`` (the reference
        misbehaves there); otherwise the first ``budget // 2`` and the last ``budget // 2`` tokens
        (method.md: "first budget/2 and last budget/2"), i.e. ``budget - 1`` tokens for an odd
        budget and ``[]`` for ``budget == 1``.
    """
    n = len(tokens)
    if n <= budget:
        return list(tokens)
    if budget <= 0:
        return []
    half = budget // 2
    return list(tokens[:half]) + list(tokens[n - half :])


def pair_context_budget(
    max_prompt_length: int,
    question_len: int,
    chosen_len: int,
    rejected_len: int,
    reserve: int = RESERVE_TOKENS,
) -> int:
    """Token budget of the context in a pair prompt (method.md §6).

    ``max_prompt_length - reserve - question_len - max(chosen_len, rejected_len)``; all lengths in
    tokens of the policy tokenizer. May be <= 0 (then :func:`middle_truncate` drops the context).
    """
    return int(max_prompt_length) - int(reserve) - int(question_len) - max(int(chosen_len), int(rejected_len))


def build_pair_prompt(
    templates: Mapping[str, str],
    context: str,
    question: str,
    chosen: str,
    rejected: str,
    encode: Callable[[str], list],
    decode: Callable[[list], str],
    max_prompt_length: int,
    reserve: int = RESERVE_TOKENS,
) -> str:
    """The pair's prompt: the answer template over the middle-truncated full context.

    Parameters
    ----------
    templates : mapping
        Templates from :func:`longmab.prompts.load_templates` (uses ``"answer"``).
    context, question : str
        The sample's full original context and its question.
    chosen, rejected : str
        The two responses (only their token lengths matter).
    encode : callable str -> list
        Policy tokenizer without special tokens, e.g.
        ``lambda s: tok.encode(s, add_special_tokens=False)``.
    decode : callable list -> str
        Inverse of ``encode``.
    max_prompt_length : int
        Token limit of prompt + response (paper: 8192).
    reserve : int, default 32
        Tokens left for the template's wording.

    Returns
    -------
    str
        The user message content (LLaMA-Factory applies the chat template). The context is passed
        through unchanged when it fits.
    """
    budget = pair_context_budget(
        max_prompt_length, len(encode(question)), len(encode(chosen)), len(encode(rejected)), reserve
    )
    ids = encode(context)
    if len(ids) > budget:
        context = decode(middle_truncate(ids, budget))
    return templates["answer"].format(context=context, question=question)

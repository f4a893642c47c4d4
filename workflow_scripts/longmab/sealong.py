"""The SeaLong baseline (arXiv 2411.08147; SihengLi99/SEALONG; method.md §10): self-consistency pairs.

N outputs are sampled per question over the full context; each output is embedded and scored by
minimum Bayes risk (MBR): its mean cosine similarity to the other N - 1 outputs. The output that
agrees most with the others is *chosen*, a seeded random one of the lower half by MBR score is
*rejected*. The gold answer never decides anything: it is only used to log how often chosen and
rejected contain it (SubEM).

Differences from SeaLong's code, deliberate: the mean excludes the output's similarity to itself
(SeaLong averages the full similarity matrix row, which adds the same constant to every score: same
ranking); the rejected pick is seeded; a question whose chosen and rejected outputs have the same
MBR score (e.g. identical texts) gives no pair and is counted as a tie.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mbr_scores(embeddings: np.ndarray) -> np.ndarray:
    """MBR score of each output: mean cosine similarity to the *other* outputs.

    Parameters
    ----------
    embeddings : array, shape (n, d)
        One embedding per output (any scale: rows are L2-normalised here; a zero row has
        similarity 0 to everything).

    Returns
    -------
    ndarray of float64, shape (n,)
        ``(sum_j cos(e_i, e_j) - cos(e_i, e_i)) / (n - 1)``; all zeros for ``n == 1``.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (n, d), got shape {e.shape}")
    n = e.shape[0]
    if n == 0:
        return np.zeros(0)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    e = np.divide(e, norms, out=np.zeros_like(e), where=norms > 0)
    if n == 1:
        return np.zeros(1)
    sim = e @ e.T
    return (sim.sum(axis=1) - np.diag(sim)) / (n - 1)


def select_sealong_pair(scores: Sequence[float], rng: np.random.Generator) -> tuple[int, int] | None:
    """(chosen, rejected) output indices from MBR scores, or ``None`` for a tie.

    chosen = the highest score (the first one on exact ties, like ``np.argmax``); rejected = drawn
    uniformly from the ``n // 2`` lowest scores (stable ascending order, as SeaLong's
    ``argsort()[:n // 2]``). ``None`` when fewer than 2 outputs or the drawn rejected output has the
    chosen one's score (nothing to prefer).

    Parameters
    ----------
    scores : sequence of float, shape (n,)
        MBR scores (:func:`mbr_scores`).
    rng : numpy.random.Generator
        Seeded generator for the rejected pick (advanced once when n >= 2).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = s.size
    if n < 2:
        return None
    chosen = int(np.argmax(s))
    lower = np.argsort(s, kind="stable")[: max(1, n // 2)]
    rejected = int(rng.choice(lower))
    if rejected == chosen or s[rejected] == s[chosen]:
        return None
    return chosen, rejected


def sealong_question(question: str, instruction: str) -> str:
    """The question as SeaLong asks it: the instruction on a new line after it (none if empty)."""
    return f"{question}\n{instruction}".strip() if instruction else question


#: SEALONG's sampling prompt (its prompts.py "eval_longbench_qa", filled as synthesize.py fills it):
#: the context, a blank line, the question with the instruction on the next line; nothing else.
SEALONG_PROMPT = "\n{context}\n\n{question}\n"
#: ``pairs.sealong.prompt``: ``ours`` = our answer template around SeaLong's question (the row is
#: scored like every other row); ``sealong`` = SEALONG's own prompt (answers are free text, scored
#: the way SEALONG's evaluation scores them: SubEM over the whole output).
PROMPT_MODES = ("ours", "sealong")


def sealong_templates(templates: dict, mode: str) -> dict:
    """``templates`` with the answer template SeaLong samples and pairs with in ``mode``."""
    if mode not in PROMPT_MODES:
        raise ValueError(f"unknown SeaLong prompt mode {mode!r} (expected one of {PROMPT_MODES})")
    return dict(templates) if mode == "ours" else {**templates, "answer": SEALONG_PROMPT}

"""UCB multi-armed bandit over the chunks of one sample (method.md §4).

Arms are chunks. State: values ``v`` (initialized from the arm's initial value, which counts as one
pseudo-observation), pull counts ``n`` and the round counter ``t``. Each round selects the ``k`` arms
with the largest ``ucb_i = v_i + sqrt(2 ln t / (n_i + 1e-6))`` and, after the response is scored,
moves every selected arm's value towards the reward: ``n_i += 1; v_i += (r - v_i) / (n_i + 1)``,
so that ``v_i = (init_i + sum of its rewards) / (n_i + 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Added to the pull counts in the exploration bonus (reference value).
EPS = 1e-6


class UCBBandit:
    """UCB1-style bandit with an initial-value pseudo-observation per arm.

    Parameters
    ----------
    init_values : sequence of float, shape (n_arms,)
        Initial arm values (e.g. cosine similarities of chunks to the probe).
    rng : numpy.random.Generator
        Source of the tie-breaking permutations; pass a seeded generator for reproducible runs.

    Attributes
    ----------
    values : ndarray of float64, shape (n_arms,)
        Current arm values.
    counts : ndarray of int64, shape (n_arms,)
        Times each arm has been selected.
    t : int
        Rounds started so far (incremented by :meth:`select`).
    """

    def __init__(self, init_values: Sequence[float], rng: np.random.Generator):
        self.values = np.array(init_values, dtype=np.float64).reshape(-1)
        self.counts = np.zeros(self.values.shape[0], dtype=np.int64)
        self.t = 0
        self.rng = rng

    @property
    def n_arms(self) -> int:
        return int(self.values.shape[0])

    def ucb(self, t: int | None = None) -> np.ndarray:
        """Upper confidence bounds at round ``t`` (default: the current ``self.t``), shape (n_arms,)."""
        t = self.t if t is None else t
        return self.values + np.sqrt(2.0 * np.log(t) / (self.counts + EPS))

    def select(self, k: int) -> list[int]:
        """Start a round and pick the ``min(k, n_arms)`` arms with the largest UCB.

        Ties (exactly equal UCB values, e.g. equal initial values in round 1, or several never-pulled
        arms with equal values later) are broken by a fresh random permutation of the arms drawn from
        ``self.rng`` every round, so equal arms are chosen uniformly at random and reproducibly for a
        seeded generator. The generator is advanced once per call whether or not there are ties.

        Parameters
        ----------
        k : int
            Arms per round (``top_k``), >= 1.

        Returns
        -------
        list of int
            Selected arm indices in ascending (document) order.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.t += 1
        ucb = self.ucb()
        tiebreak = self.rng.permutation(self.n_arms)
        order = np.lexsort((tiebreak, -ucb))  # primary: ucb descending; secondary: random rank
        return sorted(int(i) for i in order[: min(k, self.n_arms)])

    def update(self, selected: Sequence[int], reward: float) -> None:
        """Move the values of the selected arms towards ``reward``.

        For each selected arm: ``n_i += 1; v_i += (reward - v_i) / (n_i + 1)``.

        Parameters
        ----------
        selected : sequence of int
            Distinct arm indices (as returned by :meth:`select`).
        reward : float
            The round's reward (in [0, 1] for :func:`longmab.metrics.rollout_reward`).
        """
        idx = [int(i) for i in selected]
        if len(set(idx)) != len(idx):
            raise ValueError(f"selected arms must be distinct, got {idx}")
        for i in idx:
            if not 0 <= i < self.n_arms:
                raise IndexError(f"arm {i} out of range for {self.n_arms} arms")
        r = float(reward)
        for i in idx:
            self.counts[i] += 1
            self.values[i] += (r - self.values[i]) / (self.counts[i] + 1)

    def snapshot(self) -> dict:
        """JSON-ready state: ``{"t": int, "values": [float], "counts": [int]}``."""
        return {"t": int(self.t), "values": [float(v) for v in self.values], "counts": [int(c) for c in self.counts]}

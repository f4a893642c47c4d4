"""Evidence coverage of rollout rounds (all / any / round 1), rows without annotation ignored."""

from itertools import combinations

import pytest
from longmab.evidence import chance_cover_all, evidence_hit_rates, round_covers


def row(selected_per_round, evidence=(2, 3)):
    return {"evidence": list(evidence), "chunk_passages": [[1], [2], [2, 3], [4]],
            "rounds": [{"round": i + 1, "selected": s} for i, s in enumerate(selected_per_round)]}


def test_round_covers_all_and_any():
    r = row([])
    assert round_covers(r, [2]) == (True, True)  # chunk 2 spans passages 2 and 3
    assert round_covers(r, [0, 1]) == (False, True)
    assert round_covers(r, [0, 3]) == (False, False)


def test_hit_rates_over_annotated_rows_only():
    rows = [row([[2], [0, 1], [0, 3], [1, 2]]), row([[0]], evidence=()), {"rounds": [{"round": 1, "selected": [0]}]}]
    rates = evidence_hit_rates(rows)
    assert {k: rates[k] for k in ("all", "any", "round1_all", "rounds")} == {
        "all": 0.5, "any": 0.75, "round1_all": 1.0, "rounds": 4}
    assert rates["chunks"] == 4.0
    assert [r["all"] for r in rates["per_round"]] == [1.0, 0.0, 0.0, 1.0]
    assert rates["chance_all"] == pytest.approx(chance_cover_all(rows[0], 1))
    empty = evidence_hit_rates([rows[1]])
    assert empty["all"] is None and empty["rounds"] == 0 and empty["per_round"] == [] and empty["all_ci"] is None


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_chance_cover_all_is_exact(k):
    """Inclusion-exclusion equals counting every k-subset of chunks."""
    r = row([], evidence=(2, 4))
    subsets = list(combinations(range(4), k))
    expected = sum(round_covers(r, s)[0] for s in subsets) / len(subsets)
    assert chance_cover_all(r, k) == pytest.approx(expected)
    assert chance_cover_all(row([], evidence=()), k) is None


def test_sample_bootstrap_interval_brackets_the_mean():
    rows = [row([[2], [0]]), row([[0], [0]]), row([[2], [2]]), row([[1], [3]])]
    rates = evidence_hit_rates(rows)
    lo, hi = rates["all_ci"]
    assert lo <= rates["all"] <= hi and lo < hi
    assert evidence_hit_rates(rows)["all_ci"] == [lo, hi]  # seeded

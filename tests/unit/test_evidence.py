"""Evidence coverage of rollout rounds (all / any / round 1), rows without annotation ignored."""

from longmab.evidence import evidence_hit_rates, round_covers


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
    assert rates == {"all": 0.5, "any": 0.75, "round1_all": 1.0, "rounds": 4}
    assert evidence_hit_rates([rows[1]]) == {"all": None, "any": None, "round1_all": None, "rounds": 0}

"""The positive control's preference set (longmab.control): its direction is known by construction."""

from longmab.control import control_pairs, marker_rate
from longmab.metrics import extract_answer, sub_exact_match


def test_pairs_point_one_way_and_are_deterministic():
    pairs = control_pairs(8, set_name="t")
    assert pairs == control_pairs(8, set_name="t")
    for p in pairs:
        assert sub_exact_match(extract_answer(p["chosen"]), p["answer"]) == 1.0  # format + gold answer
        assert extract_answer(p["rejected"]) is None and p["answer"] not in p["rejected"]
        assert p["input"] in p["prompt"] and p["chosen"] != p["rejected"]


def test_held_out_set_shares_no_prompt_with_the_training_set():
    train = {p["prompt"] for p in control_pairs(12, set_name="control-train")}
    held = {p["prompt"] for p in control_pairs(10, set_name="control-heldout")}
    assert not train & held


def test_marker_rate():
    assert marker_rate(["Reasoning: x\nAnswer: y", "no line here"]) == 0.5
    assert marker_rate([]) == 0.0

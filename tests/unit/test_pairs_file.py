"""pairs.from_file: the preference formats a user has, validated with file:line errors and converted
into the dataset the pairs stage writes."""

from __future__ import annotations

import json

import pytest
from longmab.stages.pairs_file import PreferenceFileError, import_pairs, normalise


def encode(s):  # one token per word: lengths easy to reason about
    return s.split()


def decode(ids):
    return " ".join(ids)


def write(tmp_path, rows, name="p.jsonl", as_list=False):
    path = tmp_path / name
    if as_list:
        path.write_text(json.dumps(rows, indent=1))
    else:
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


OURS = {"id": "s1", "input": "Q?", "answer": "a", "prompt": "Context. Q?", "chosen": "Answer: a",
        "rejected": "Answer: b", "chosen_reward": 1.0, "rejected_reward": 0.0}
ALPACA = {"instruction": "Read this.", "input": "Q?", "chosen": "Answer: a", "rejected": "no idea"}
SHAREGPT = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Q?"}],
            "chosen": {"from": "gpt", "value": "Answer: a"}, "rejected": {"from": "gpt", "value": "b"}}
OPENAI = {"messages": [{"role": "user", "content": "Q?"}],
          "chosen": {"role": "assistant", "content": "a"}, "rejected": "b"}


def test_every_format_converts_to_prompt_chosen_rejected(tmp_path):
    pairs, stats = import_pairs(write(tmp_path, [OURS, ALPACA, SHAREGPT, OPENAI]), encode, decode, 100, 4)
    assert [p["prompt"] for p in pairs] == ["Context. Q?", "Read this.\nQ?", "Q?", "Q?"]
    assert [p["chosen"] for p in pairs] == ["Answer: a", "Answer: a", "Answer: a", "a"]
    assert [p["rejected"] for p in pairs] == ["Answer: b", "no idea", "b", "b"]
    assert pairs[0]["id"] == "s1" and pairs[0]["chosen_reward"] == 1.0 and pairs[1]["id"] == "line-2"
    assert pairs[2]["system"] == "Be brief." and "system" not in pairs[0]
    assert [p["source_line"] for p in pairs] == [1, 2, 3, 4]
    assert stats["formats"] == {"prompt": 1, "alpaca": 1, "sharegpt": 2} and stats["pairs"] == 4


def test_a_json_list_reads_like_json_lines(tmp_path):
    a, _ = import_pairs(write(tmp_path, [OURS, ALPACA], "a.jsonl"), encode, decode, 100, 4)
    b, _ = import_pairs(write(tmp_path, [OURS, ALPACA], "b.json", as_list=True), encode, decode, 100, 4)
    assert a == b


def test_every_problem_is_named_with_file_and_line(tmp_path):
    rows = [OURS, {"prompt": "Q?", "chosen": "x"}, {"prompt": "Q?", "chosen": "same", "rejected": " same"},
            "{not json", {"question": "Q?", "chosen": "a", "rejected": "b"}, {**ALPACA, "chosen": ""},
            {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
                               {"from": "human", "value": "c"}], "chosen": "x", "rejected": "y"}]
    path = write(tmp_path, rows)
    with pytest.raises(PreferenceFileError) as err:
        import_pairs(path, encode, decode, 100, 4)
    assert f"{path}:4: not valid JSON" in str(err.value)  # bad JSON is reported first, alone
    rows[3] = OURS
    with pytest.raises(PreferenceFileError) as err:
        import_pairs(write(tmp_path, rows), encode, decode, 100, 4)
    msg = str(err.value)
    assert "5 problems" in msg
    assert f"{path}:2: missing field 'rejected'" in msg
    assert f"{path}:3: 'chosen' equals 'rejected'" in msg
    assert f"{path}:5: no prompt" in msg
    assert f"{path}:6: 'chosen' is empty" in msg
    assert f"{path}:7: 'conversations' must hold one user turn" in msg and "multi-turn" in msg


def test_over_long_prompts_are_refused_or_cut_in_the_middle(tmp_path):
    long = {"prompt": " ".join(f"w{i}" for i in range(50)), "chosen": "a b c", "rejected": "d"}
    path = write(tmp_path, [OURS, long])
    with pytest.raises(PreferenceFileError, match=r":2: prompt of 50 tokens \+ response of 3 \+ reserve 4 exceeds "
                                                  r"pairs.max_prompt_length 27"):
        import_pairs(path, encode, decode, 27, 4)
    pairs, stats = import_pairs(path, encode, decode, 27, 4, truncate=True)
    assert pairs[1]["prompt"].split() == [f"w{i}" for i in range(10)] + [f"w{i}" for i in range(40, 50)]
    assert stats["prompts_truncated"] == 1 and stats["prompts_truncated_lines"] == [2]
    assert pairs[0]["prompt"] == OURS["prompt"]


def test_errors_are_capped_and_say_how_many_more(tmp_path):
    path = write(tmp_path, [{"prompt": "Q", "chosen": "x", "rejected": "x"}] * 30)
    with pytest.raises(PreferenceFileError) as err:
        import_pairs(path, encode, decode, 100, 4, max_errors=5)
    assert "30 problems" in str(err.value) and "... and 25 more problems" in str(err.value)


def test_normalise_rejects_non_objects():
    assert normalise([1, 2])[1] == "expected a JSON object, got list"

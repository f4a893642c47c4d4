"""Benchmark loaders (method.md §8): LongBench and InfiniteBench normalized to one shape."""

import json
from pathlib import Path

import pytest
from longmab.benchmarks import BenchmarkError, load_benchmark, normalize_item

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_longbench_fixture():
    items = load_benchmark(FIXTURES / "longbench_small.jsonl", "longbench")
    assert [i["id"] for i in items] == ["a1b2c3", "d4e5f6", "g7h8i9"]
    assert items[0] == {"id": "a1b2c3", "input": "Where was Ada born?",
                        "context": "Passage 1:\nAda was born in Paris.\n\nPassage 2:\nBob likes tea.",
                        "answers": ["Paris"]}
    assert items[1]["answers"] == ["1201", "the year 1201"]


def test_infinitebench_fixture():
    items = load_benchmark(FIXTURES / "infinitebench_small.jsonl", "infinitebench")
    assert [i["id"] for i in items] == ["0", "1"]  # int ids become str
    assert items[0]["answers"] == ["Dana"]
    assert items[1]["answers"] == ["green"]  # a bare string answer becomes a list
    assert set(items[0]) == {"id", "input", "context", "answers"}  # options dropped


def test_same_shape_for_both_formats():
    lb = load_benchmark(FIXTURES / "longbench_small.jsonl", "longbench")
    ib = load_benchmark(FIXTURES / "infinitebench_small.jsonl", "infinitebench")
    assert {tuple(sorted(i)) for i in lb + ib} == {("answers", "context", "id", "input")}


def test_max_samples():
    assert len(load_benchmark(FIXTURES / "longbench_small.jsonl", "longbench", max_samples=2)) == 2
    assert len(load_benchmark(FIXTURES / "longbench_small.jsonl", "longbench", max_samples=0)) == 3


def test_evidence_kept_when_present():
    row = {"input": "q", "context": "c", "answers": ["a"], "_id": "x", "evidence": [2, 5]}
    assert normalize_item(row, "longbench")["evidence"] == [2, 5]


def _write(tmp_path, rows, name="bad.jsonl"):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return p


GOOD_LB = {"input": "q", "context": "c", "answers": ["a"], "length": 1, "dataset": "d", "_id": "1"}


@pytest.mark.parametrize("bad, fmt, message", [
    ({k: v for k, v in GOOD_LB.items() if k != "answers"}, "longbench", "missing field 'answers'"),
    ({**GOOD_LB, "answers": []}, "longbench", "non-empty list"),
    ({**GOOD_LB, "answers": [None]}, "longbench", "is not a string"),
    ({**GOOD_LB, "context": 5}, "longbench", "field 'context' must be a string"),
    ({k: v for k, v in GOOD_LB.items() if k != "_id"}, "longbench", "missing field '_id'"),
    ({"id": 1, "input": "q", "context": "c", "answers": ["a"]}, "infinitebench", "missing field 'answer'"),
    ([1, 2], "longbench", "expected a JSON object"),
])
def test_bad_row_names_file_and_line(tmp_path, bad, fmt, message):
    good = GOOD_LB if fmt == "longbench" else {"id": 0, "input": "q", "context": "c", "answer": ["a"]}
    p = _write(tmp_path, [good, "", bad])  # the bad row is on line 3 (a blank line 2 still counts)
    with pytest.raises(BenchmarkError) as err:
        load_benchmark(p, fmt)
    assert str(err.value).startswith(f"{p}:3: ")
    assert message in str(err.value)


def test_invalid_json_and_duplicates(tmp_path):
    p = _write(tmp_path, [GOOD_LB, "{not json"])
    with pytest.raises(BenchmarkError, match=rf"{p}:2: invalid JSON"):
        load_benchmark(p, "longbench")
    p = _write(tmp_path, [GOOD_LB, GOOD_LB], "dup.jsonl")
    with pytest.raises(BenchmarkError, match=r"dup.jsonl:2: duplicate id '1' \(first on line 1\)"):
        load_benchmark(p, "longbench")


def test_empty_file_and_unknown_format(tmp_path):
    p = _write(tmp_path, [""], "empty.jsonl")
    with pytest.raises(BenchmarkError, match="no items"):
        load_benchmark(p, "longbench")
    with pytest.raises(ValueError, match="unknown benchmark format"):
        load_benchmark(FIXTURES / "longbench_small.jsonl", "ruler")


def test_synthetic_test_sets_load():
    """The embedded default's data/test files parse with the format config.yaml gives them."""
    import yaml

    repo = FIXTURES.parents[1]
    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    for name, spec in cfg["eval"]["benchmarks"].items():
        items = load_benchmark(repo / spec["path"], spec["format"])
        assert items and all(i["answers"] for i in items), name

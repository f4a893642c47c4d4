"""MuSiQue / HotpotQA -> raw samples: contexts, evidence numbers, CLI, errors."""

import json
from pathlib import Path

import pytest

from longmab.chunking import passage_spans
from longmab.cli import main
from longmab.convert import convert_file, convert_items
from longmab.io import read_jsonl
from longmab.validate import scan_file

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "musique-hotpotqa-sample"

MUSIQUE = [
    {"id": "2hop__1", "question": " Who founded the publisher of X? ", "answer": "Ann Bell", "answer_aliases": [],
     "answerable": True,
     "paragraphs": [
         {"idx": 0, "title": "Noise", "paragraph_text": "Unrelated text.", "is_supporting": False},
         {"idx": 1, "title": "X", "paragraph_text": "X is published by Acme.", "is_supporting": True},
         {"idx": 2, "title": "Acme", "paragraph_text": "Acme was founded by Ann Bell.", "is_supporting": True},
     ]},
    {"id": "2hop__2", "question": "q", "answer": "a", "answerable": False,
     "paragraphs": [{"idx": 0, "title": "t", "paragraph_text": "p", "is_supporting": False}]},
]

HOTPOT = [{"_id": "h1", "question": "Which came first?", "answer": "Alpha", "type": "comparison",
           "context": [["Alpha", ["Alpha was made in 1900.", " It is old."]], ["Beta", ["Beta was made in 1950."]],
                       ["Gamma", ["Unrelated."]]],
           "supporting_facts": [["Alpha", 0], ["Beta", 0]]}]


def test_musique_context_layout_and_evidence():
    [s] = convert_items(MUSIQUE, "musique")  # the unanswerable item is skipped
    assert s["id"] == "2hop__1" and s["input"] == "Who founded the publisher of X?" and s["answer"] == "Ann Bell"
    assert s["context"].startswith("Passage 1:\nNoise\nUnrelated text.\n\nPassage 2:\nX\n")
    assert s["evidence"] == [2, 3]
    spans = passage_spans(s["context"])
    assert [n for n, _, _ in spans] == [1, 2, 3]
    assert "Acme was founded by Ann Bell." in s["context"][spans[2][1]:spans[2][2]]


def test_hotpotqa_joins_sentences_and_marks_supporting_titles():
    [s] = convert_items(HOTPOT, "hotpotqa")
    assert "Passage 1:\nAlpha\nAlpha was made in 1900. It is old." in s["context"]
    assert s["evidence"] == [1, 2]


def test_bad_items_and_formats_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown format"):
        convert_items([], "squad")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([MUSIQUE[0], {"id": "x", "question": "q"}]))
    with pytest.raises(ValueError, match=r"bad.json: item 2: not a musique item"):
        convert_file(bad, "musique")
    jl = tmp_path / "bad.jsonl"
    jl.write_text(json.dumps(MUSIQUE[0]) + "\n\n{broken\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: line 3: malformed JSON"):
        convert_file(jl, "musique")


def test_cli_writes_valid_training_jsonl(tmp_path, capsys):
    src = tmp_path / "m.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in MUSIQUE))
    out = tmp_path / "train.jsonl"
    assert main(["convert", str(src), str(out), "--format", "musique"]) == 0
    assert "1 samples" in capsys.readouterr().out
    errors, samples = scan_file(out)
    assert errors == [] and len(samples) == 1 and read_jsonl(out)[0]["evidence"] == [2, 3]
    assert main(["convert", str(tmp_path / "missing.json"), str(out), "--format", "musique"]) == 2


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data sample not present")
@pytest.mark.parametrize("name,fmt", [("musique_train.json", "musique"), ("hotpotqa_train.json", "hotpotqa")])
def test_real_samples_convert_with_evidence_in_range(name, fmt):
    samples = convert_file(SHARED / name, fmt)
    assert len(samples) == 100
    for s in samples:
        numbers = [n for n, _, _ in passage_spans(s["context"])]
        assert numbers == list(range(1, len(numbers) + 1))
        assert len(s["evidence"]) >= 2 and set(s["evidence"]) <= set(numbers)

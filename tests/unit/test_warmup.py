"""The embedded policy's format warm-up (longmab/warmup.py): its examples, and a real training step."""

from __future__ import annotations

import json

import pytest
from longmab import synth
from longmab.metrics import extract_answer, extract_probe_answer
from longmab.prompts import PROBE_TEMPLATE, load_templates
from longmab.runs import policy_id, warmup_settings
from longmab.warmup import WarmupSettings, answer_response, build_examples, probe_response, reasoning_steps

SMALL = WarmupSettings(examples=24, seed=7)


@pytest.fixture(scope="module")
def examples():
    return build_examples(SMALL)


def test_examples_deterministic_and_mixed(examples):
    assert examples == build_examples(SMALL)
    assert len(examples) == 24
    kinds = {ex["kind"] for ex in examples}
    assert kinds == {"answer", "probe"}
    assert build_examples(WarmupSettings(examples=24, seed=8)) != examples


def test_examples_come_from_the_training_world_only(examples):
    test_words = synth.build_worlds(7)["test"].words
    text = json.dumps(examples)
    assert not [w for w in test_words if w in text]


def test_responses_follow_the_formats_the_metrics_read(examples):
    templates = load_templates()
    for ex in examples:
        user, reply = ex["messages"]
        assert user["role"] == "user" and reply["role"] == "assistant"
        if ex["kind"] == "answer":
            assert reply["content"].startswith("Reasoning: ")
            ans = extract_answer(reply["content"])
        else:
            assert reply["content"].rstrip(".").rsplit("The answer is ", 1)[1]
            ans = extract_probe_answer(reply["content"], template=templates["probe"])
        assert ans and ans.strip(". ") in user["content"].lower()


def test_reasoning_quotes_the_evidence_of_every_hop():
    data = synth.generate_dataset(seed=3, n_train=40, n_test_per_set=1, keep_meta=True)
    seen = set()
    for row in data["train"]:
        steps = reasoning_steps(row)
        meta = row["meta"]
        seen.add(meta["type"])
        quoted = [s for s in steps if s.startswith("Passage ")]
        assert len(quoted) == meta["hops"]
        for step in quoted:
            number, sentence = step.split(" says: ", 1)
            passage = row["context"].split("\n\n")[int(number.split()[1]) - 1]
            assert sentence.strip('"') in passage
        assert answer_response(row).endswith("\nAnswer: " + row["answer"])
        assert probe_response(row).endswith(f"The answer is {row['answer']}.")
    assert seen & set(synth.COMPARISON_TYPES) and seen & set(synth.TWO_HOP_TYPES)


def test_probe_template_is_the_default(examples):
    probe = next(ex for ex in examples if ex["kind"] == "probe")
    assert probe["messages"][0]["content"].startswith(PROBE_TEMPLATE.split("\n", 1)[0])


def test_settings_reject_unknown_keys():
    with pytest.raises(ValueError, match="unknown models.warmup key"):
        WarmupSettings.from_dict({"exampels": 3})
    s = WarmupSettings.from_dict({"enabled": True, "passages": [2, 3]}, seed=5)
    assert s.passages == (2, 3) and s.seed == 5


def test_warmup_names_the_policy_only_for_the_embedded_model():
    cfg = {"seed": 1, "models": {"policy": "embedded", "warmup": {"enabled": True, "examples": 4}}}
    assert warmup_settings(cfg) == {"examples": 4, "seed": 1}
    assert policy_id(cfg) == {"name": "embedded", "warmup": {"examples": 4, "seed": 1}}
    assert policy_id({**cfg, "seed": 2}) != policy_id(cfg)  # a new warm-up: new folders downstream
    off = {"seed": 1, "models": {"policy": "embedded", "warmup": {"enabled": False}}}
    assert warmup_settings(off) is None and policy_id(off) == "embedded"
    other = {"seed": 1, "models": {"policy": "/models/llama", "warmup": {"enabled": True}}}
    assert warmup_settings(other) is None and policy_id(other) == "/models/llama"


@pytest.mark.slow
def test_a_real_warmup_step_lowers_the_loss_and_saves_a_model(policy_model, tmp_path):
    """Two steps on four examples with the real model: the folder loads, the record says what ran,
    and the second step's loss on the same data is lower than the first's."""
    from longmab.warmup import train_warmup

    s = WarmupSettings(examples=2, batch_size=2, epochs=2, learning_rate=1e-4, seed=7, dtype="float32",
                       threads=1)
    record = train_warmup(policy_model, tmp_path / "warm", s)
    assert record["steps"] == 2 and record["examples"] == 2 and not record["bf16_autocast"]
    assert record["loss"][1]["loss"] < record["loss"][0]["loss"]
    saved = json.loads((tmp_path / "warm" / "warmup.json").read_text())
    assert saved["settings"]["seed"] == 7
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "warm") is not None

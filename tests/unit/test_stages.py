"""Stage logic on plain data. The engine here is a scripted stand-in (a real class implementing the
Engine protocol) because these tests need *specific* responses — empty, marker-less, all equal —
that no real model can be made to produce; real-engine runs are in tests/test_engine.py and the
end-to-end tests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from longmab.engines import SamplingConfig
from longmab.io import read_json, read_jsonl, write_jsonl
from longmab.prompts import load_templates
from longmab.stages.data import prepare_shards, shard_bounds
from longmab.stages.embed import cosine_values, initial_values
from longmab.stages.pairs import build_pairs, dataset_info
from longmab.stages.probe import drop_reason, run_probe
from longmab.stages.rollout import run_rollout

SAMPLING = SamplingConfig(temperature=1.0, top_p=0.95, presence_penalty=1.0, max_tokens=16)
TEMPLATES = load_templates(None)


class ScriptedEngine:
    """Answers each conversation with ``respond(prompt_text, seed)``; counts calls."""

    def __init__(self, respond):
        self.respond = respond
        self.calls = []

    def generate(self, conversations, sampling, seeds):
        self.calls.append(len(conversations))
        return [self.respond(c[-1]["content"], s) for c, s in zip(conversations, seeds)]

    def count_tokens(self, text):
        return len(text.split())

    def close(self):
        pass


CONTEXT = "Passage 1:\nMira Tolk was born in Ashvale. She liked tea.\n\nPassage 2:\nAshvale lies on the Runa river, in the north."


def sample(i, answer="Ashvale", context=CONTEXT):
    return {"id": str(i), "input": f"Where was Mira Tolk born? ({i})", "answer": answer, "context": context}


def test_shard_bounds_cover_everything_contiguously():
    assert shard_bounds(5, 2) == [(0, 3), (3, 5)]
    assert shard_bounds(2, 3) == [(0, 1), (1, 2), (2, 2)]


def test_prepare_shards_writes_manifest_and_respects_max_samples(tmp_path):
    raw = tmp_path / "train.jsonl"
    write_jsonl(raw, [sample(i) for i in range(5)])
    shards = [str(tmp_path / "000.jsonl"), str(tmp_path / "001.jsonl")]
    manifest = prepare_shards(raw, shards, str(tmp_path / "m.json"), max_samples=3)
    assert [r["id"] for r in read_jsonl(shards[0])] == ["0", "1"]
    assert [r["id"] for r in read_jsonl(shards[1])] == ["2"]
    assert manifest["samples_used"] == 3 and read_json(tmp_path / "m.json")["samples_in_file"] == 5


def test_prepare_shards_bad_file_writes_nothing(tmp_path):
    raw = tmp_path / "train.jsonl"
    raw.write_text('{"id": 1, "input": "q", "answer": "a", "context": "c"}\n{"id": 2, "input": ""}\n')
    shard = tmp_path / "000.jsonl"
    with pytest.raises(ValueError, match=r"train.jsonl:2:"):
        prepare_shards(raw, [str(shard)], str(tmp_path / "m.json"))
    assert not shard.exists() and not (tmp_path / "m.json").exists()


@pytest.mark.parametrize(
    "probe,reason",
    [
        ("", "empty generation"),
        ("I think it is Ashvale.", "no 'The answer is' marker"),
        ("Passage 1 says so. The answer is: Runa", "does not match"),
        ("Passage 1 says so. The answer is Ashvale.", None),
        ("The answer is Runa. Wait, no: the answer is: Ashvale", None),
    ],
)
def test_drop_reason(probe, reason):
    got = drop_reason(probe, "Ashvale", template=TEMPLATES["probe"])
    assert (got is None) if reason is None else (reason in got)


def test_drop_reason_names_an_echo_of_the_instruction():
    user = "{context}\n{question} ({answer})\nEnd with `The answer is` followed by the correct answer."
    echo = "Step 1: Passage 1. End with `The answer is` followed by the correct answer."
    assert "only echoes" in drop_reason(echo, "Ashvale", template=user)
    assert "does not match" in drop_reason(echo, "Ashvale")  # without the template: taken as an answer


def test_run_probe_subem_mode_reaches_the_filter():
    """Issue #9.8: reward.subem = token also applies to the probe's keep decision."""
    engine = ScriptedEngine(lambda p, s: "Passage 2 says so. The answer is thus the north.")
    rows = [sample(0, answer="U.S.")]  # normalizes to "us": a substring of "thus" but not a token
    kept, _ = run_probe(rows, engine, TEMPLATES, SAMPLING, {"chunk_size": 8}, seed=1, subem="char")
    assert len(kept) == 1
    kept, stats = run_probe(rows, engine, TEMPLATES, SAMPLING, {"chunk_size": 8}, seed=1, subem="token")
    assert kept == [] and "does not match" in stats["dropped_ids"][0]["reason"]
    with pytest.raises(ValueError, match="subem"):
        run_probe(rows, engine, TEMPLATES, SAMPLING, {"chunk_size": 8}, seed=1, subem="word")


def test_run_probe_drops_a_sample_too_long_for_the_window(caplog):
    """Issue #13.6: one over-long context is dropped with its reason; the rest of the shard proceeds."""
    huge = sample(1, context="Passage 1:\n" + "Mira Tolk was born in Ashvale. " * 2000)
    engine = ScriptedEngine(lambda p, s: "Passage 1. The answer is Ashvale.")
    with caplog.at_level("WARNING", logger="longmab"):
        kept, stats = run_probe([sample(0), huge, sample(2)], engine, TEMPLATES, SAMPLING, {"chunk_size": 8},
                                seed=1, max_model_len=1000)
    assert engine.calls == [2]  # the huge one never reaches the engine
    assert [r["id"] for r in kept] == ["0", "2"]
    assert stats["too_long"] == 1 and stats["dropped"] == 1 and stats["kept"] == 2
    (drop,) = stats["dropped_ids"]
    assert drop["id"] == "1" and drop["reason"].startswith("prompt too long:")
    assert "+ max_tokens 16 > max_model_len 1000" in drop["reason"]
    assert "id=1 (shard line 2)" in caplog.text
    # Without a window (none given, none on the engine) nothing is measured.
    _, stats = run_probe([huge], ScriptedEngine(lambda p, s: "The answer is Ashvale"), TEMPLATES, SAMPLING,
                         {"chunk_size": 8}, seed=1)
    assert stats["too_long"] == 0 and stats["kept"] == 1


def test_run_probe_engine_error_names_the_sample():
    class Refusing(ScriptedEngine):
        def generate(self, conversations, sampling, seeds):
            err = ValueError("prompt 1 of this call has 99 tokens, max_model_len is 50")
            err.request_index = 1
            raise err

    engine = Refusing(None)
    with pytest.raises(ValueError, match=r"sample id='2' \(shard line 3\): prompt 1 of this call"):
        run_probe([sample(0), sample(1, context="x " * 2000), sample(2)], engine, TEMPLATES, SAMPLING,
                  {"chunk_size": 8}, seed=1, max_model_len=1000)


@pytest.mark.slow
def test_run_probe_real_engine_survives_a_huge_sample(tmp_path):
    """The transformers engine on the embedded policy: a shard of short samples plus one ~1 MB context
    with a 2048-token window. Before, the engine failed the whole shard ("prompt 0 has ... tokens")."""
    from pathlib import Path

    from longmab.engines import make_engine

    built = Path(__file__).resolve().parents[2] / "results" / "models" / "policy"
    if (built / "config.json").exists():
        model = str(built)
    else:
        from longmab.models import build_embedded_policy

        model = str(build_embedded_policy(tmp_path / "policy"))
    engine = make_engine("transformers", model, dtype="float32", max_model_len=2048, seed=0)
    try:
        huge = sample(7, context="Passage 1:\n" + "Mira Tolk was born in Ashvale, by the river. " * 22_000)
        assert len(huge["context"]) > 900_000
        short = SamplingConfig(temperature=1.0, top_p=0.95, presence_penalty=1.0, max_tokens=8)
        rows, stats = run_probe([sample(0), huge, sample(1)], engine, TEMPLATES, short, {"chunk_size": 64},
                                seed=1, keep_unmatched=True)
        # The engine itself names the request it cannot take (and carries its index for the caller).
        from longmab.prompts import render_probe

        conv = render_probe(TEMPLATES, huge["context"], huge["input"], huge["answer"])
        with pytest.raises(ValueError, match=r"request 1 of this call \(seed 5\): its prompt has \d+ tokens") as err:
            engine.generate([[{"role": "user", "content": "Hi"}], conv], short, [4, 5])
        assert err.value.request_index == 1
    finally:
        engine.close()
    assert [r["id"] for r in rows] == ["0", "1"] and all(isinstance(r["probe"], str) for r in rows)
    assert stats["too_long"] == 1 and stats["samples"] == 3
    reason = next(d["reason"] for d in stats["dropped_ids"] if d["id"] == "7")
    assert reason.startswith("prompt too long:") and "max_model_len 2048" in reason


def test_run_probe_keeps_matching_and_counts_drops():
    def respond(prompt, seed):
        return "Passage 1 says she was born there. The answer is Ashvale." if "(0)" in prompt else "The answer is Runa."

    engine = ScriptedEngine(respond)
    kept, stats = run_probe([sample(0), sample(1)], engine, TEMPLATES, SAMPLING, {"chunk_size": 8}, seed=1)
    assert engine.calls == [2]  # one engine call for the shard
    assert [r["id"] for r in kept] == ["0"]
    assert stats["kept"] == 1 and stats["dropped"] == 1 and stats["dropped_ids"][0]["id"] == "1"
    row = kept[0]
    assert "".join(row["chunks"]).replace(" ", "") != "" and all(c in CONTEXT for c in row["chunks"])
    assert len(row["chunks"]) == len(row["chunk_passages"]) and row["chunk_passages"][0] == [1]


def test_run_probe_keep_unmatched_returns_all_rows_but_counts_drops():
    engine = ScriptedEngine(lambda p, s: "The answer is Ashvale." if "(0)" in p else "The answer is Runa.")
    rows, stats = run_probe([sample(0), sample(1)], engine, TEMPLATES, SAMPLING, {"chunk_size": 8}, seed=1,
                            keep_unmatched=True)
    assert [r["id"] for r in rows] == ["0", "1"] and all(r["chunks"] for r in rows)
    assert "probe_drop_reason" not in rows[0] and "does not match" in rows[1]["probe_drop_reason"]
    assert stats["kept"] == 1 and stats["dropped"] == 1


def test_context_shorter_than_one_chunk_is_one_arm():
    engine = ScriptedEngine(lambda p, s: "The answer is Ashvale")
    kept, _ = run_probe([sample(0)], engine, TEMPLATES, SAMPLING, {"chunk_size": 10_000}, seed=1)
    assert kept[0]["chunks"] == [CONTEXT]


def test_initial_values_methods():
    rows = [{"id": "a", "input": "q", "probe": "p", "chunks": ["x", "y", "z"]}]

    def encode(texts):  # 2-d toy embedding: probe/question/chunks at fixed angles
        table = {"p": [1, 0], "q": [0, 1], "x": [1, 0], "y": [0, 2], "z": [1, 1]}
        return np.array([table[t] for t in texts], dtype=float)

    probe = initial_values(rows, "probe_similarity", 0, encode)[0]["init_values"]
    query = initial_values(rows, "query_similarity", 0, encode)[0]["init_values"]
    assert probe == pytest.approx([1.0, 0.0, 2 ** -0.5])
    assert query == pytest.approx([0.0, 1.0, 2 ** -0.5])
    r1 = initial_values(rows, "random", 7)[0]["init_values"]
    assert r1 == initial_values(rows, "random", 7)[0]["init_values"]
    assert r1 != initial_values(rows, "random", 8)[0]["init_values"]
    assert all(0 <= v < 1 for v in r1)
    assert cosine_values(encode, "p", []) == []
    with pytest.raises(ValueError, match="unknown init method"):
        initial_values(rows, "bogus", 0, encode)


def arm_rows(n_chunks=3, k_ids=2, answer="Ashvale"):
    return [{"id": str(i), "input": f"q{i}", "answer": answer, "context": "c0 c1 c2",
             "chunks": [f"chunk{j}" for j in range(n_chunks)], "init_values": [0.3, 0.9, 0.5][:n_chunks]}
            for i in range(k_ids)]


def test_rollout_one_call_per_round_and_records_every_round(tmp_path):
    engine = ScriptedEngine(lambda p, s: "Reasoning: chunk1 says so.\nAnswer: Ashvale" if "chunk1" in p else "Answer: Runa")
    rows, stats = run_rollout(arm_rows(), engine, TEMPLATES, SAMPLING, rounds=4, top_k=1, seed=3)
    assert engine.calls == [2, 2, 2, 2]
    r = rows[0]["rounds"]
    assert [x["round"] for x in r] == [1, 2, 3, 4]
    assert r[0]["selected"] == [1] and r[0]["reward"] == 1.0  # round 1 = best initial value
    assert sorted(x["selected"][0] for x in r[:3]) == [0, 1, 2]  # every arm once before repeats
    assert r[0]["values"][1] == pytest.approx((0.9 + 1.0) / 2)
    assert 0 <= stats["overhead_share"] <= 1


def test_rollout_top_k_larger_than_chunks_and_empty_chunks():
    rows = arm_rows(n_chunks=2, k_ids=1) + [{"id": "e", "input": "q", "answer": "a", "context": "", "chunks": [], "init_values": []}]
    engine = ScriptedEngine(lambda p, s: "")
    out, _ = run_rollout(rows, engine, TEMPLATES, SAMPLING, rounds=2, top_k=5, seed=0)
    assert out[0]["rounds"][0]["selected"] == [0, 1]
    assert out[0]["rounds"][0]["reward"] == 0.0  # empty response, no marker
    assert out[1]["rounds"] == [] and engine.calls == [1, 1]


def test_rollout_resume_gives_identical_result(tmp_path):
    def respond(p, s):
        return f"Answer: {'Ashvale' if s % 3 else 'Runa'}"

    full, _ = run_rollout(arm_rows(), ScriptedEngine(respond), TEMPLATES, SAMPLING, rounds=5, top_k=1, seed=9)
    resume = tmp_path / "r.journal.jsonl"

    class Crash(Exception):
        pass

    def crashing(p, s, calls=[0]):
        calls[0] += 1
        if calls[0] > 6:  # dies during round 4 (2 samples per round)
            raise Crash
        return respond(p, s)

    with pytest.raises(Crash):
        run_rollout(arm_rows(), ScriptedEngine(crashing), TEMPLATES, SAMPLING, rounds=5, top_k=1, seed=9,
                    journal_path=resume, mode="sync")
    assert len(read_jsonl(resume)) == 1 + 6  # header + 3 rounds x 2 samples
    engine = ScriptedEngine(respond)
    resumed, _ = run_rollout(arm_rows(), engine, TEMPLATES, SAMPLING, rounds=5, top_k=1, seed=9, journal_path=resume)
    assert engine.calls == [2, 2]  # only rounds 4 and 5 generated again
    assert json.dumps(resumed) == json.dumps(full)


def test_rollout_random_strategy_ignores_values_and_is_seeded():
    rows = [dict(r, chunks=[f"chunk{j}" for j in range(6)], init_values=[0.0, 0.0, 0.0, 0.0, 0.0, 9.0]) for r in arm_rows()]
    engine = ScriptedEngine(lambda p, s: "Answer: Runa")
    a, stats = run_rollout(rows, engine, TEMPLATES, SAMPLING, rounds=6, top_k=2, seed=4, strategy="random")
    b, _ = run_rollout(rows, ScriptedEngine(lambda p, s: "Answer: Runa"), TEMPLATES, SAMPLING, rounds=6, top_k=2, seed=4, strategy="random")
    c, _ = run_rollout(rows, ScriptedEngine(lambda p, s: "Answer: Runa"), TEMPLATES, SAMPLING, rounds=6, top_k=2, seed=5, strategy="random")
    picks = [x["selected"] for x in a[0]["rounds"]]
    assert json.dumps(a) == json.dumps(b) and json.dumps(a) != json.dumps(c)
    assert all(len(sel) == 2 and sel == sorted(sel) and len(set(sel)) == 2 for sel in picks)
    assert len({tuple(sel) for sel in picks}) > 1  # not stuck on the highest initial value (arm 5)
    assert sum(5 in sel for sel in picks) < 6
    assert stats["strategy"] == "random" and stats["generations"] == 12 and engine.calls == [2] * 6


def test_rollout_full_strategy_sends_the_original_context():
    seen = []
    engine = ScriptedEngine(lambda p, s: seen.append(p) or "Answer: Ashvale")
    out, _ = run_rollout(arm_rows(), engine, TEMPLATES, SAMPLING, rounds=2, top_k=1, seed=0, strategy="full")
    assert all(x["selected"] == [0, 1, 2] for x in out[0]["rounds"])
    assert all("c0 c1 c2" in p and "chunk0" not in p for p in seen)
    with pytest.raises(ValueError, match="unknown rollout strategy"):
        run_rollout(arm_rows(), engine, TEMPLATES, SAMPLING, rounds=1, top_k=1, seed=0, strategy="greedy")


def rollout_row(i, responses, answer="Ashvale"):
    return {"id": str(i), "input": "Where?", "answer": answer, "context": "word " * 50,
            "rounds": [{"round": j + 1, "selected": [0], "reward": 0, "values": [0], "response": r} for j, r in enumerate(responses)]}


def test_build_pairs_best_vs_worst_and_ties_counted():
    rows = [rollout_row(0, ["Answer: Runa", "Answer: Ashvale", "no marker"]),
            rollout_row(1, ["Answer: Runa", "Answer: Runa"])]
    pairs, stats = build_pairs(rows, TEMPLATES, str.split, " ".join, max_prompt_length=40, reserve_tokens=4, seed=0)
    assert len(pairs) == 1 and stats["ties_skipped_ids"] == ["1"]
    p = pairs[0]
    assert p["chosen"] == "Answer: Ashvale" and p["chosen_reward"] == 1.0 and p["rejected_reward"] == 0.0
    assert p["indices"][0] == 1 and p["indices"][1] in (0, 2)
    assert "Where?" in p["prompt"] and p["prompt"].count("word") < 50  # middle-truncated context
    assert stats["mean_distinct_responses"] == pytest.approx((3 + 1) / 2)
    assert stats["mean_rollout_reward"] == 0.0 and stats["evidence_hit_rate"]["all"] is None  # no annotation
    again, _ = build_pairs(rows, TEMPLATES, str.split, " ".join, max_prompt_length=40, reserve_tokens=4, seed=0)
    assert again == pairs


def test_dataset_info_is_llamafactory_ranking_entry():
    info = dataset_info("longmab_x")
    assert info["longmab_x"]["ranking"] is True
    assert info["longmab_x"]["columns"] == {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}


def test_probe_sampling_override():
    from longmab.stages.probe import probe_sampling

    base = {"temperature": 0.7, "top_p": 0.95, "presence_penalty": 1.0, "max_tokens": 32}
    assert probe_sampling(base).temperature == 0.7
    assert probe_sampling({**base, "probe_temperature": None}).temperature == 0.7
    assert probe_sampling({**base, "probe_temperature": 0.3}) == SamplingConfig(0.3, 0.95, 1.0, 32)


def test_atomic_outputs_get_umask_permissions(tmp_path):
    import os
    import stat

    from longmab.io import atomic_dir, write_text

    mask = os.umask(0o022)
    try:
        write_text(tmp_path / "f.txt", "x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "a").write_text("y")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert (tmp_path / "d" / "a").read_text() == "y"

"""Rollout schedules (sync / async), the append-only journal (resume, torn, corrupt, foreign,
legacy checkpoints), early stop and shard balancing, on scripted engines (the real engines:
tests/test_rollout_engine.py)."""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from longmab.engines import SamplingConfig, stream_generate
from longmab.io import write_jsonl
from longmab.metrics import strict_reward
from longmab.prompts import load_templates
from longmab.stages.pairs import build_pairs
from longmab.stages.rollout import (
    EarlyStop,
    apply_early_stop,
    assign_shards,
    estimate_cost,
    journal_path_for,
    legacy_checkpoint_for,
    read_journal,
    run_rollout,
    set_aside,
)

REPO = Path(__file__).resolve().parents[2]
SAMPLING = SamplingConfig(temperature=1.0, top_p=0.95, presence_penalty=1.0, max_tokens=16)
TEMPLATES = load_templates(None)


def respond(prompt: str, seed: int) -> str:
    """Deterministic in (prompt, seed); lengths vary with the seed, rewards vary with the chunk."""
    answer = "Ashvale" if ("chunk1" in prompt or seed % 4 == 0) else ("Runa" if seed % 3 else "")
    return "Reasoning: " + "so " * (seed % 7) + (f"\nAnswer: {answer}" if answer else "no idea")


class ScriptedEngine:
    """``generate`` only (stream_generate falls back to waves); counts calls and generations."""

    def __init__(self, respond=respond, fail_after=None):
        self.respond = respond
        self.calls: list[int] = []
        self.generations = 0
        self.fail_after = fail_after

    def _one(self, conv, seed):
        if self.fail_after is not None and self.generations >= self.fail_after:
            raise RuntimeError("engine died")
        self.generations += 1
        return self.respond(conv[-1]["content"], seed)

    def generate(self, conversations, sampling, seeds):
        self.calls.append(len(conversations))
        return [self._one(c, s) for c, s in zip(conversations, seeds)]

    def count_tokens(self, text):
        return len(text.split())

    def close(self):
        pass


class StreamingEngine(ScriptedEngine):
    """Continuous batching on a virtual clock: a request takes ``1 + seed % 97`` ticks from its submission,
    requests finish in time order (so samples drift apart across rounds)."""

    def __init__(self, respond=respond, fail_after=None):
        super().__init__(respond, fail_after)
        self.finished: list = []  # keys in completion order

    def generate_stream(self, requests, sampling, on_done):
        heap, clock, seq = [], 0, 0

        def add(reqs):
            nonlocal seq
            for key, conv, seed in reqs or ():
                text = self._one(conv, seed)
                heapq.heappush(heap, (clock + 1 + seed % 97, seq, key, text))
                seq += 1

        add(requests)
        while heap:
            clock, _, key, text = heapq.heappop(heap)
            self.finished.append(key)
            add(on_done(key, text))
        return {"requests": seq, "prompt_tokens": 0, "generated_tokens": 0, "seconds": 0.0,
                "mean_in_flight": 0.0, "peak_in_flight": 0}


def arm_rows(n=4, n_chunks=5):
    return [{"id": f"s{i}", "input": f"Where was Mira {i} born?", "answer": "Ashvale", "context": "c0 c1 c2 c3 c4",
             "chunks": [f"chunk{j}" for j in range(n_chunks)],
             "init_values": [0.1 * ((i + j) % 5) for j in range(n_chunks)]} for i in range(n)]


def dump(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def rollout(engine, mode, rows=None, journal=None, rounds=6, **kw):
    return run_rollout(arm_rows() if rows is None else rows, engine, TEMPLATES, SAMPLING, rounds=rounds, top_k=2,
                       seed=5, journal_path=journal, mode=mode, **kw)


@pytest.fixture
def reference():
    out, _ = rollout(ScriptedEngine(), "sync")
    return dump(out)


# -- schedules ---------------------------------------------------------------------------------------


def test_async_equals_sync_and_runs_samples_out_of_step(reference):
    eng = StreamingEngine()
    out, stats = rollout(eng, "async")
    assert dump(out) == reference
    assert stats["mode"] == "async" and stats["generations"] == 24 == eng.generations
    rounds_seen = {}
    lag = 0
    for key in eng.finished:
        rounds_seen[key] = rounds_seen.get(key, 0) + 1
        lag = max(lag, max(rounds_seen.values()) - min(rounds_seen.get(k, 0) for k in range(4)))
    assert lag >= 2  # at some point one sample was 2+ rounds ahead of another: no round barrier


def test_async_without_generate_stream_falls_back_to_round_waves(reference):
    eng = ScriptedEngine()
    out, _ = rollout(eng, "async")
    assert dump(out) == reference and eng.calls == [4] * 6


def test_sync_is_one_call_per_round_and_unknown_mode_fails():
    eng = ScriptedEngine()
    rollout(eng, "sync")
    assert eng.calls == [4] * 6
    with pytest.raises(ValueError, match="unknown rollout mode"):
        rollout(eng, "bogus")


def test_stream_generate_fallback_chains_requests():
    eng = ScriptedEngine()
    seen = []

    def on_done(key, text):
        seen.append(key)
        return [(key + 10, [{"role": "user", "content": "x"}], 1)] if key < 10 else []

    st = stream_generate(eng, [(1, [{"role": "user", "content": "a"}], 1), (2, [{"role": "user", "content": "b"}], 2)],
                         SAMPLING, on_done)
    assert seen == [1, 2, 11, 12] and eng.calls == [2, 2] and st["requests"] == 4


# -- journal -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,resume_mode", [("sync", "sync"), ("async", "async"), ("async", "sync"), ("sync", "async")])
def test_interrupted_and_resumed_rollout_is_byte_identical(tmp_path, reference, mode, resume_mode):
    journal = tmp_path / ".000.journal.jsonl"
    engine_cls = StreamingEngine if mode == "async" else ScriptedEngine
    with pytest.raises(RuntimeError, match="engine died"):
        rollout(engine_cls(fail_after=11), mode, journal=journal)
    lines = journal.read_text().splitlines()
    assert json.loads(lines[0])["format"] == "longmab-rollout-journal"
    done = len(lines) - 1
    assert 0 < done <= 11
    eng = (StreamingEngine if resume_mode == "async" else ScriptedEngine)()
    out, stats = rollout(eng, resume_mode, journal=journal)
    assert dump(out) == reference
    assert stats["generations_resumed"] == done and eng.generations == 24 - done == stats["generations"]
    assert len(journal.read_text().splitlines()) == 25  # header + one line per sample-round


def test_journal_grows_by_one_line_per_record(tmp_path):
    journal = tmp_path / "j.jsonl"
    sizes = []

    class Sizing(ScriptedEngine):
        def generate(self, conversations, sampling, seeds):
            if journal.exists():
                sizes.append(journal.stat().st_size)
            return super().generate(conversations, sampling, seeds)

    rollout(Sizing(), "sync", journal=journal, rounds=8)
    steps = [b - a for a, b in itertools.pairwise(sizes)]
    assert max(steps) < 2 * min(steps)  # each round appends about the same, however long the history


def test_torn_last_line_is_dropped_and_resumed(tmp_path, reference, caplog):
    journal = tmp_path / "j.jsonl"
    with pytest.raises(RuntimeError):
        rollout(ScriptedEngine(fail_after=9), "sync", journal=journal)
    good = journal.read_bytes()
    journal.write_bytes(good + b'{"i": 2, "id": "s2", "round": 3, "sel')  # died mid-append
    eng = ScriptedEngine()
    with caplog.at_level(logging.WARNING, logger="longmab"):
        out, stats = rollout(eng, "async", journal=journal)
    assert dump(out) == reference and stats["generations_resumed"] == 8
    assert "torn last line" in caplog.text
    assert not list(tmp_path.glob("*.corrupt-*"))
    assert all(json.loads(line) for line in journal.read_text().splitlines())  # truncated, then appended cleanly


def test_torn_header_only_restarts(tmp_path, reference):
    journal = tmp_path / "j.jsonl"
    journal.write_bytes(b'{"format": "longmab-rollout-jou')
    out, stats = rollout(ScriptedEngine(), "sync", journal=journal)
    assert dump(out) == reference and stats["generations"] == 24


@pytest.mark.parametrize("damage", ["middle_line", "garbage", "foreign", "tampered", "not_a_journal", "bad_index"])
def test_unusable_journal_is_set_aside_and_the_job_completes(tmp_path, reference, caplog, damage):
    journal = tmp_path / ".001.journal.jsonl"
    with pytest.raises(RuntimeError):
        rollout(ScriptedEngine(fail_after=10), "sync", journal=journal)
    lines = journal.read_text().splitlines()
    if damage == "middle_line":
        lines[3] = lines[3][:20]
    elif damage == "garbage":
        journal.write_bytes(b"\x00\xff\xfe" * 50 + b"\n")
        lines = None
    elif damage == "foreign":
        head = json.loads(lines[0])
        lines[0] = json.dumps(dict(head, fingerprint="0" * 64))
    elif damage == "tampered":
        rec = json.loads(lines[5])
        lines[5] = json.dumps(dict(rec, selected=[0, 4] if rec["selected"] != [0, 4] else [1, 2]))
    elif damage == "not_a_journal":
        lines = [json.dumps({"fingerprint": "x", "done": 3, "history": [], "bandits": []})]  # an old resume file
    elif damage == "bad_index":
        lines[2] = json.dumps(dict(json.loads(lines[2]), i=99))
    if lines is not None:
        journal.write_text("\n".join(lines) + "\n")
    eng = ScriptedEngine()
    with caplog.at_level(logging.WARNING, logger="longmab"):
        out, stats = rollout(eng, "sync", journal=journal)
    assert dump(out) == reference
    assert stats["generations_resumed"] == 0 and eng.generations == 24  # started over
    aside = list(tmp_path.glob(".001.journal.jsonl.corrupt-*"))
    assert len(aside) == 1 and "set aside" in caplog.text and aside[0].name in caplog.text
    # the retry after that one is a plain resume of the fresh journal
    assert read_journal(journal, json.loads(journal.read_text().splitlines()[0])["fingerprint"])[0]


def test_set_aside_never_overwrites(tmp_path):
    p = tmp_path / "x.json"
    names = set()
    for k in range(3):
        p.write_text(str(k))
        names.add(set_aside(p, "test").name)
    assert len(names) == 3 and not p.exists()
    assert sorted(q.read_text() for q in tmp_path.iterdir()) == ["0", "1", "2"]


def test_checkpoint_names():
    assert journal_path_for("results/rollout/t/003.jsonl") == Path("results/rollout/t/.003.journal.jsonl")
    assert legacy_checkpoint_for("results/rollout/003.jsonl") == Path("results/rollout/.003.resume.json")


def test_journal_key_is_part_of_the_fingerprint(tmp_path):
    journal = tmp_path / "j.jsonl"
    with pytest.raises(RuntimeError):
        rollout(ScriptedEngine(fail_after=5), "sync", journal=journal, journal_key="code-a")
    _, stats = rollout(ScriptedEngine(), "sync", journal=journal, journal_key="code-b")
    assert stats["generations_resumed"] == 0 and list(tmp_path.glob("j.jsonl.corrupt-*"))


CHILD = r"""
import sys, time, json
sys.path.insert(0, {scripts!r})
sys.path.insert(0, {tests!r})
from test_rollout import ScriptedEngine, arm_rows, rollout
class Slow(ScriptedEngine):
    def _one(self, conv, seed):
        time.sleep(0.05)
        return super()._one(conv, seed)
rollout(Slow(), {mode!r}, journal={journal!r})
"""


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_killed_process_resumes_byte_identical(tmp_path, reference, mode):
    journal = tmp_path / "j.jsonl"
    code = CHILD.format(scripts=str(REPO / "workflow_scripts"), tests=str(Path(__file__).parent), mode=mode,
                        journal=str(journal))
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if journal.exists() and journal.read_bytes().count(b"\n") >= 8:
                break
            if proc.poll() is not None:
                pytest.fail(f"child exited early ({proc.returncode})")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = journal.read_bytes().count(b"\n") - 1
    assert 7 <= done < 24
    out, stats = rollout(ScriptedEngine(), mode, journal=journal)
    assert dump(out) == reference and stats["generations_resumed"] == done


# -- early stop --------------------------------------------------------------------------------------


def test_early_stop_truncates_each_sample_at_its_stop_round(reference):
    full = [json.loads(line) for line in reference.splitlines()]
    stop = EarlyStop(enabled=True, min_rounds=3)
    out, stats = rollout(ScriptedEngine(), "sync", early_stop=stop)
    out_async, _ = rollout(StreamingEngine(), "async", early_stop={"enabled": True, "min_rounds": 3})
    assert dump(out) == dump(out_async)
    stopped = 0
    for f, o in zip(full, out):
        scores = [strict_reward(r["response"], f["answer"]) for r in f["rounds"]]
        expect = next((r for r in range(3, 7) if max(scores[:r]) == 1.0 and min(scores[:r]) == 0.0), 6)
        assert o["rounds"] == f["rounds"][:expect]
        stopped += expect < 6
    assert stopped >= 1 and stats["stopped_early"] == stopped
    assert stats["generations"] == sum(len(o["rounds"]) for o in out) < stats["generations_planned"] == 24
    pairs, pstats = build_pairs(out, TEMPLATES, lambda s: s.split(), " ".join, 512, 32, 5)
    assert pstats["rollout_samples"] == 4 and all(p["chosen_reward"] == 1.0 for p in pairs)


@pytest.mark.parametrize("min_rounds", [1, 2, 4, 6])
def test_apply_early_stop_equals_running_with_it(reference, min_rounds):
    full = [json.loads(line) for line in reference.splitlines()]
    stop = EarlyStop(enabled=True, min_rounds=min_rounds)
    ran, _ = rollout(ScriptedEngine(), "async", early_stop=stop)
    assert dump(apply_early_stop(full, stop)) == dump(ran)
    assert dump(apply_early_stop(full, EarlyStop())) == reference


def test_early_stop_off_by_default_and_validated(reference):
    out, stats = rollout(ScriptedEngine(), "sync", early_stop={"enabled": False, "min_rounds": 1})
    assert dump(out) == reference and stats["stopped_early"] == 0
    with pytest.raises(ValueError, match="min_rounds"):
        EarlyStop(enabled=True, min_rounds=0)
    with pytest.raises(ValueError, match="unknown rollout.early_stop keys"):
        EarlyStop.from_dict({"enable": True})


def test_early_stop_resume(tmp_path):
    stop = EarlyStop(enabled=True, min_rounds=2)
    ref, _ = rollout(ScriptedEngine(), "sync", early_stop=stop)
    journal = tmp_path / "j.jsonl"
    with pytest.raises(RuntimeError):
        rollout(StreamingEngine(fail_after=7), "async", journal=journal, early_stop=stop)
    out, _ = rollout(ScriptedEngine(), "sync", journal=journal, early_stop=stop)
    assert dump(out) == dump(ref)


# -- shard balancing ---------------------------------------------------------------------------------


def test_assign_shards_balances_keeps_order_and_is_deterministic():
    rows = [{"id": str(i), "chunks": ["x"] * (1 + i % 3)} for i in range(9)]
    shards = assign_shards(rows, 2)
    assert [len(s) for s in shards] in ([5, 4], [4, 5])
    assert sorted(r["id"] for s in shards for r in s) == sorted(r["id"] for r in rows)
    for s in shards:
        assert [int(r["id"]) for r in s] == sorted(int(r["id"]) for r in s)
    assert assign_shards(rows, 2) == shards
    # six kept samples in the first probe shard, three in the second: balanced after assignment
    skewed = [{"id": str(i), "chunks": ["x"] if i < 6 or i >= 10 else []} for i in range(13)]
    assert [sum(bool(r["chunks"]) for r in s) for s in assign_shards(skewed, 2)] in ([5, 4], [4, 5])
    assert assign_shards(rows[:1], 3)[1:] == [[], []]
    with pytest.raises(ValueError, match="n_shards"):
        assign_shards(rows, 0)


def test_assign_shards_by_estimated_tokens():
    rows = [{"id": str(i), "context": "w" * 400 * (i + 1), "chunks": ["w" * 400] * (i + 1)} for i in range(6)]
    cost = functools.partial(estimate_cost, rounds=10, top_k=2, max_tokens=50)
    assert cost(rows[0]) == 10 * (1 * 100 + 50) and cost(rows[3]) == 10 * (2 * 100 + 50)
    assert cost({"chunks": []}) == 0.0
    assert estimate_cost(rows[2], 10, 2, 50, strategy="full") == 10 * (300 + 50)
    full = functools.partial(estimate_cost, rounds=10, top_k=2, max_tokens=50, strategy="full")
    loads = [sum(full(r) for r in s) for s in assign_shards(rows, 2, cost=full)]
    assert max(loads) - min(loads) <= full(rows[0])


def test_rollout_over_assigned_shards_equals_whole(tmp_path):
    rows = arm_rows(n=5)
    whole, _ = rollout(ScriptedEngine(), "sync", rows=rows)
    parts = [rollout(ScriptedEngine(), "async", rows=s)[0] for s in assign_shards(rows, 2)]
    by_id = {r["id"]: r for p in parts for r in p}
    assert [json.dumps(by_id[r["id"]]) for r in whole] == [json.dumps(r) for r in whole]


# -- rule adapter ------------------------------------------------------------------------------------


def load_adapter():
    import importlib.util

    spec = importlib.util.spec_from_file_location("rollout_adapter", REPO / "workflow_scripts" / "rollout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_adapter_takes_its_balanced_part_of_all_embed_shards(tmp_path):
    adapter = load_adapter()
    rows = arm_rows(n=7)
    for r in rows[2:4]:
        r["chunks"], r["init_values"] = [], []
    write_jsonl(tmp_path / "000.jsonl", rows[:5])
    write_jsonl(tmp_path / "001.jsonl", rows[5:])
    files = [str(tmp_path / "000.jsonl"), str(tmp_path / "001.jsonl")]
    parts = [adapter.shard_rows(files, k, 2) for k in range(2)]
    assert parts == assign_shards(rows, 2)
    assert sorted(r["id"] for p in parts for r in p) == sorted(r["id"] for r in rows)
    assert adapter.shard_rows(files[0]) == rows[:5]  # one file, no shard params: today's wiring
    with pytest.raises(ValueError, match="params shard/shards"):
        adapter.shard_rows(files)


@pytest.fixture
def restore_logging():
    """The adapter's setup_logging replaces the longmab logger's handlers and stops propagation."""
    logger = logging.getLogger("longmab")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    for h in saved[0]:
        logger.addHandler(h)
    logger.propagate, logger.level = saved[1], saved[2]


def test_adapter_sets_legacy_checkpoint_aside_and_skips_the_engine_for_an_empty_shard(tmp_path, restore_logging):
    from types import SimpleNamespace

    adapter = load_adapter()
    arms = tmp_path / "embed.jsonl"
    write_jsonl(arms, [{"id": "a", "input": "q", "answer": "x", "context": "", "chunks": [], "init_values": []}])
    out = tmp_path / "rollout" / "000.jsonl"
    out.parent.mkdir()
    legacy = legacy_checkpoint_for(out)
    legacy.write_text('{"fingerprint": "abc", "done": 2, "hist')  # half-written: blocked every retry before
    smk = SimpleNamespace(log=[str(tmp_path / "log.txt")], output=[str(out)],
                          input=SimpleNamespace(arms=str(arms), model=None),
                          params=SimpleNamespace(engine={"backend": "none"}))
    adapter.main(smk)
    assert [json.loads(x)["rounds"] for x in out.read_text().splitlines()] == [[]]
    assert not legacy.exists() and len(list(out.parent.glob(".000.resume.json.corrupt-*"))) == 1
    assert "set aside" in (tmp_path / "log.txt").read_text()

"""Rollout schedules and the journal on the real engines (slow: model load; vLLM start ~45 s).

Small on purpose: 3 samples of data/train.jsonl, 3 rounds, max_tokens 16. The sync and async
schedules must write byte-identical rollout files, and so must a run that was interrupted and
resumed from its journal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from longmab.engines import SamplingConfig, make_engine, stream_generate
from longmab.io import read_jsonl
from longmab.prompts import load_templates
from longmab.stages.rollout import run_rollout

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SAMPLING = SamplingConfig(temperature=1.0, top_p=0.95, presence_penalty=1.0, max_tokens=16)
TEMPLATES = load_templates(None)


def rows(n=3):
    out = []
    for i, s in enumerate(read_jsonl(REPO / "data" / "train.jsonl")[:n]):
        chunks = [p for p in s["context"].split("\n\n") if p.strip()]
        out.append(dict(s, chunks=chunks, init_values=[((7 * i + 3 * j) % 10) / 10 for j in range(len(chunks))]))
    return out


def dump(rs) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rs)


class Dying:
    """Passes everything to ``engine`` but raises after ``n`` finished generations (either API)."""

    def __init__(self, engine, n):
        self.engine, self.left = engine, n
        self.tokenizer = engine.tokenizer

    def _tick(self, k=1):
        self.left -= k
        if self.left < 0:
            raise RuntimeError("engine died")

    def generate(self, conversations, sampling, seeds):
        self._tick(len(conversations))
        return self.engine.generate(conversations, sampling, seeds)

    def generate_stream(self, requests, sampling, on_done):
        def wrapped(key, text):
            self._tick()
            return on_done(key, text)

        return self.engine.generate_stream(requests, sampling, wrapped)


def check_schedules(engine, tmp_path):
    run = lambda eng, mode, journal=None: run_rollout(rows(), eng, TEMPLATES, SAMPLING, rounds=3, top_k=2, seed=7,
                                                      mode=mode, journal_path=journal)[0]
    sync = dump(run(engine, "sync"))
    assert dump(run(engine, "async")) == sync
    journal = tmp_path / "j.jsonl"
    with pytest.raises(RuntimeError, match="engine died"):
        run(Dying(engine, 4), "async", journal)
    assert 2 <= journal.read_text().count("\n") - 1 <= 4
    assert dump(run(engine, "sync", journal)) == sync
    return sync


def test_transformers_sync_async_and_resume_are_byte_identical(policy_model, tmp_path):
    engine = make_engine("transformers", policy_model, dtype="float32", max_model_len=2048, seed=0)
    try:
        out = check_schedules(engine, tmp_path)
        assert len(out.splitlines()) == 3 and all(len(json.loads(x)["rounds"]) == 3 for x in out.splitlines())
    finally:
        engine.close()


def test_vllm_stream_equals_generate_and_schedules_are_byte_identical(policy_model, tmp_path):
    pytest.importorskip("vllm")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    engine = make_engine("vllm", policy_model, dtype="float32", max_model_len=2048, seed=0)
    try:
        convs = [[{"role": "user", "content": f"Name a city in country number {i}."}] for i in range(3)]
        batch = engine.generate(convs, SAMPLING, [1, 2, 3])
        got = {}

        def on_done(key, text):
            got[key] = text
            return [(key + 10, convs[key], key + 1)] if key < 10 else []  # the same request again

        st = stream_generate(engine, [(k, convs[k], k + 1) for k in range(3)], SAMPLING, on_done)
        assert [got[k] for k in range(3)] == batch == [got[k + 10] for k in range(3)]
        assert st["requests"] == 6 and st["generated_tokens"] > 0 and 0 < st["mean_in_flight"] <= 3
        check_schedules(engine, tmp_path)
    finally:
        engine.close()

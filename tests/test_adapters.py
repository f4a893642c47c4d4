"""LoRA serving (eval.adapters, vLLM's enable_lora): an adapter applied by the base model's engine
answers like the model it merges into, in process and through a run's shared server (slow:
engine starts)."""

from __future__ import annotations

import pytest
from longmab.engines import SamplingConfig, lora_engine_args, make_engine, set_adapter
from longmab.engines.server import connect, stop_servers

pytestmark = pytest.mark.slow

CONVS = [[{"role": "user", "content": f"Write {i + 2} words about rivers."}] for i in range(3)]
GREEDY = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=12)
SETTINGS = {"dtype": "float32", "max_model_len": 1024, "seed": 0}


@pytest.fixture(scope="module")
def adapter_and_merged(policy_model, tmp_path_factory):
    """A rank-8 LoRA adapter with random (not zero) B on the embedded policy, so it changes the
    answers, and the model it merges into (PEFT merge_and_unload, float32)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(policy_model, dtype=torch.float32)
    peft = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                           init_lora_weights=False))
    peft.save_pretrained(out / "adapter")
    merged = peft.merge_and_unload()
    merged.save_pretrained(out / "merged")
    AutoTokenizer.from_pretrained(policy_model).save_pretrained(out / "merged")
    return str(out / "adapter"), str(out / "merged")


def test_an_adapter_served_by_the_base_engine_answers_like_the_merged_model(policy_model, adapter_and_merged,
                                                                            tmp_path):
    pytest.importorskip("vllm")
    adapter, merged = adapter_and_merged
    engine = make_engine("vllm", policy_model, vllm=lora_engine_args(adapter), **SETTINGS)
    try:
        base_texts = engine.generate(CONVS, GREEDY, [1, 2, 3])
        set_adapter(engine, adapter)
        served = engine.generate(CONVS, GREEDY, [1, 2, 3])
        set_adapter(engine, None)
        assert engine.generate(CONVS, GREEDY, [1, 2, 3]) == base_texts  # the adapter is per call
    finally:
        engine.close()
    assert served != base_texts  # the adapter acts
    ref = make_engine("vllm", merged, **SETTINGS)
    try:
        assert ref.generate(CONVS, GREEDY, [1, 2, 3]) == served  # float32: the merged model's answers
    finally:
        ref.close()
    try:  # the shared server applies each job's adapter to that job's calls only
        client = connect("vllm", policy_model, {**SETTINGS, "vllm": lora_engine_args(adapter)}, run_dir=tmp_path)
        assert client.serves_adapters
        set_adapter(client, adapter)
        assert client.generate(CONVS, GREEDY, [1, 2, 3]) == served
        plain = connect("vllm", policy_model, {**SETTINGS, "vllm": lora_engine_args(adapter)}, run_dir=tmp_path)
        assert plain.generate(CONVS, GREEDY, [1, 2, 3]) == base_texts
        client.close()
        plain.close()
    finally:
        stop_servers(tmp_path, grace=5)


def test_the_transformers_engine_refuses_an_adapter(policy_model, adapter_and_merged):
    engine = make_engine("transformers", policy_model, **SETTINGS)
    try:
        with pytest.raises(ValueError, match="eval.adapters needs engine backend vllm"):
            set_adapter(engine, adapter_and_merged[0])
    finally:
        engine.close()

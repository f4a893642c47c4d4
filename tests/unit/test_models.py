"""Fast checks of model locations and the engine's sampling logic (no model is loaded)."""

from __future__ import annotations

import pytest
import torch
from longmab.engines import HFEngine, SamplingConfig, make_engine
from longmab.models import (
    embedded_embedder_path,
    embedded_gguf_path,
    resolve_model_path,
)


def test_embedded_gguf_is_found():
    p = embedded_gguf_path()
    assert p.is_file() and p.suffix == ".gguf"
    assert p.stat().st_size > 50_000_000


def test_embedded_embedder_folder():
    p = embedded_embedder_path()
    assert p.is_dir()
    assert any(p.iterdir())


def test_resolve_model_path(tmp_path):
    assert resolve_model_path(tmp_path) == str(tmp_path.resolve())
    assert resolve_model_path("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    with pytest.raises(FileNotFoundError):
        resolve_model_path(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        resolve_model_path("./not/here")


def test_sampling_config():
    assert SamplingConfig(temperature=0.0).greedy
    assert not SamplingConfig(temperature=0.7).greedy
    with pytest.raises(ValueError):
        SamplingConfig(temperature=-1)
    with pytest.raises(ValueError):
        SamplingConfig(top_p=0)
    with pytest.raises(ValueError):
        SamplingConfig(max_tokens=0)
    cfg = SamplingConfig.from_dict({"temperature": 1.0, "top_p": 0.95, "presence_penalty": 1.0,
                                    "max_tokens": 8, "unused": 1})
    assert cfg == SamplingConfig(1.0, 0.95, 1.0, 8)


def test_make_engine_rejects_unknown_backend(tmp_path):
    with pytest.raises(ValueError):
        make_engine("llama.cpp", str(tmp_path))


def _bare_engine() -> HFEngine:
    eng = HFEngine.__new__(HFEngine)  # sampling only: no model
    eng.torch = torch
    eng.pad_id = 0
    return eng


def test_presence_penalty_and_greedy():
    eng = _bare_engine()
    logits = torch.tensor([[1.0, 0.9, 0.0], [1.0, 0.9, 0.0]])
    seen = torch.tensor([[True, False, False], [False, False, False]])
    done = torch.zeros(2, dtype=torch.bool)
    cfg = SamplingConfig(temperature=0.0, presence_penalty=1.0)
    out = eng._sample(logits, seen, cfg, [None, None], done)
    assert out.tolist() == [1, 0]  # row 0: token 0 penalised below token 1


def test_top_p_and_per_row_generators():
    eng = _bare_engine()
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]] * 2))
    seen = torch.zeros((2, 3), dtype=torch.bool)
    done = torch.zeros(2, dtype=torch.bool)
    cfg = SamplingConfig(temperature=1.0, top_p=0.5)
    for s in range(20):  # top_p 0.5 keeps only the top token
        gens = [torch.Generator().manual_seed(s), torch.Generator().manual_seed(s + 1)]
        assert eng._sample(logits, seen, cfg, gens, done).tolist() == [0, 0]
    cfg = SamplingConfig(temperature=1.0, top_p=0.85)  # keeps tokens 0 and 1 (0.6 + 0.3 >= 0.85)
    draws = set()
    for s in range(50):
        gens = [torch.Generator().manual_seed(s), torch.Generator().manual_seed(s)]
        a, b = eng._sample(logits, seen, cfg, gens, done).tolist()
        assert a == b  # same seed, same draw, whatever the row
        draws.add(a)
    assert draws == {0, 1}


def test_merge_lora_equals_the_adapter_on_its_base(tmp_path):
    """An external row's adapter merged with PEFT answers like the base model with the adapter on."""
    import torch
    from longmab.gpucheck import build_tiny_llama, byte_level_chatml_tokenizer
    from longmab.models import merge_lora
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    build_tiny_llama(base_dir)
    byte_level_chatml_tokenizer().save_pretrained(base_dir)
    torch.manual_seed(0)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(adapter_dir)
    out = merge_lora(base_dir, adapter_dir, tmp_path / "merged")
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        want = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir)(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base_dir)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(out)(ids).logits
    assert torch.allclose(got, want, atol=1e-4) and not torch.allclose(got, plain, atol=1e-3)
    assert (out / "tokenizer_config.json").is_file() and not list(tmp_path.glob(".merged.*"))
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter"):
        merge_lora(base_dir, base_dir, tmp_path / "x")

"""bench/gpu_check.sh's library (longmab.gpucheck) on its CPU twin: the tiny model, the engine row,
the table. (The embedder and DPO rows run in `bench/gpu_check.sh --device cpu`, ~80 s here.)"""

from __future__ import annotations

import json

from longmab.gpucheck import build_tiny_llama, byte_level_chatml_tokenizer, format_table, run_checks


def test_tiny_llama_is_deterministic_and_small(tmp_path):
    byte_level_chatml_tokenizer().save_pretrained(tmp_path / "tok")
    a = build_tiny_llama(tmp_path / "a", seed=1, tokenizer_dir=tmp_path / "tok")
    b = build_tiny_llama(tmp_path / "b", seed=1, tokenizer_dir=tmp_path / "tok")
    cfg = json.loads((a / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_hidden_layers"] == 2 and cfg["head_dim"] >= 32
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert sum(p.stat().st_size for p in a.iterdir()) < 2 * 2**20  # byte-level vocab: ~0.3 MB of weights


def test_run_checks_cpu_engine_row_and_table(tmp_path):
    byte_level_chatml_tokenizer().save_pretrained(tmp_path / "tok")
    rows = run_checks("cpu", tmp_path / "work", tmp_path / "tok", skip=("embedder", "dpo"))
    assert [r["component"] for r in rows] == ["device decision", "tiny model build", "transformers engine"]
    assert all(r["ok"] for r in rows), rows
    assert rows[0]["result"].startswith("cpu") and "reproduced" in rows[2]["result"]
    table = format_table(rows)
    lines = table.splitlines()
    assert [c.strip() for c in lines[0].split(" | ")] == ["component", "device", "seconds", "result"]
    assert len({line.index(" | ") for line in lines if " | " in line}) == 1, "columns line up"
    assert len(lines) == 2 + len(rows) and "transformers engine" in lines[-1]


def test_a_failing_row_is_reported_not_raised(tmp_path):
    rows = run_checks("cpu", tmp_path / "work", tmp_path / "no-tokenizer-here", skip=("embedder", "dpo"))
    build = next(r for r in rows if r["component"] == "tiny model build")
    assert build["ok"] is False and build["result"].startswith("FAILED")

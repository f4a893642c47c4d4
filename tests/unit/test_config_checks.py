"""Config checks the schema cannot express (longmab.config.check_config / check_runs): each bad value
is reported before any job runs, naming its key and its value."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

import pytest
import yaml
from longmab.config import (
    ConfigError,
    check_config,
    check_runs,
    count_samples,
    ensure_valid,
    explain_errors,
    llamafactory_templates,
    load_schema,
    validate_config,
)

REPO = Path(__file__).resolve().parents[2]
LONGBENCH_ROW = {"_id": "0", "input": "q?", "context": "c.", "answers": ["a"]}
INFINITEBENCH_ROW = {"id": "0", "input": "q?", "context": "c.", "answer": ["a"]}


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def base(tmp_path) -> dict:
    """The repo's config.yaml (raw, no defaults) with its files in ``tmp_path``: 6 samples, 2 sets."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    write_jsonl(tmp_path / "data" / "train.jsonl",
                [{"id": i, "input": "q?", "answer": "a", "context": "Passage 1:\nx."} for i in range(6)])
    write_jsonl(tmp_path / "data" / "lb.jsonl", [LONGBENCH_ROW])
    write_jsonl(tmp_path / "data" / "ib.jsonl", [INFINITEBENCH_ROW])
    cfg["data"]["train"] = "data/train.jsonl"
    cfg["preset"] = "custom"  # the model-path checks below change models.policy on purpose
    cfg["eval"]["benchmarks"] = {"lb": {"path": "data/lb.jsonl", "format": "longbench"},
                                 "ib": {"path": "data/ib.jsonl", "format": "infinitebench"}}
    return cfg


def with_(cfg: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(cfg)
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def problems(cfg: dict, tmp_path: Path, **kw) -> list[str]:
    return check_config(cfg, basedir=tmp_path, **kw)


def only(lines: list[str], key: str) -> str:
    """The one problem line of ``key`` (and no other problem)."""
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"config key '{key}': "), lines
    return lines[0]


# --- a valid config ----------------------------------------------------------------------------------


def test_valid_config_has_no_problem(base, tmp_path):
    assert problems(base, tmp_path) == []


def test_repo_configs_have_no_problem():
    """config.yaml, and the tiny test config merged over it, pass in the repo's own directory."""
    from longmab.runs import deep_merge

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    assert check_runs(cfg, basedir=REPO) == []
    tiny = deep_merge(cfg, yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text()))
    assert check_runs(tiny, basedir=REPO) == []


def test_check_config_leaves_the_config_alone(base, tmp_path):
    before = copy.deepcopy(base)
    problems(with_(base, "data.train", "missing.jsonl"), tmp_path)
    problems(base, tmp_path)
    assert base == before


# --- integers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value", [
    ("rollout.rounds", 4.0), ("rollout.top_k", 2.0), ("data.shards", 2.0), ("chunking.chunk_size", 160.0),
    ("eval.max_model_len", 4096.0), ("seed", 42.0), ("engine.vllm.max_num_seqs", 8.0),
])
def test_integer_valued_float_is_rejected(base, tmp_path, key, value):
    line = only(problems(with_(base, key, value), tmp_path), key)
    assert f"must be an integer, got {value!r} (write {int(value)})" in line


def test_fractional_float_for_an_integer_key(base, tmp_path):
    line = only(problems(with_(base, "rollout.top_k", 2.5), tmp_path), "rollout.top_k")
    assert line.endswith("must be an integer, got 2.5")


def test_float_is_fine_for_a_number_key(base, tmp_path):
    assert problems(with_(base, "dpo.num_train_epochs", 2.0), tmp_path) == []
    assert problems(with_(base, "sampling.temperature", 1), tmp_path) == []  # an int is a number


def test_validate_config_rejects_integer_valued_floats_too(base):
    with pytest.raises(ConfigError, match=r"config key 'rollout.rounds': must be an integer, got 4.0"):
        validate_config(with_(base, "rollout.rounds", 4.0))
    assert explain_errors(with_(base, "rollout.rounds", 4.0), prefix="runs.x.") == [
        "config key 'runs.x.rollout.rounds': must be an integer, got 4.0 (write 4)"]


def test_snakemake_validate_accepts_integer_valued_floats():
    """Why the check is ours: JSON Schema's `integer` (and so snakemake.utils.validate) takes 4.0."""
    from snakemake.utils import validate

    cfg = {"rollout": {"rounds": 4.0, "top_k": 2.0}}
    validate(cfg, str(REPO / "schemas" / "config.schema.yaml"))  # no error
    assert cfg["rollout"]["rounds"] == 4.0 and cfg["data"]["shards"] == 2  # defaults filled
    assert explain_errors({"rollout": {"rounds": 4.0}}, load_schema())


# --- chunking ----------------------------------------------------------------------------------------


def test_overlap_that_swallows_the_chunk(base, tmp_path):
    cfg = with_(with_(base, "chunking.chunk_size", 8), "chunking.overlap_fragments", 50)
    line = only(problems(cfg, tmp_path), "chunking.overlap_fragments")
    assert "50 fragments of overlap" in line and "chunking.chunk_size 8" in line
    assert "use overlap_fragments <= 0 or a larger chunk_size" in line


@pytest.mark.parametrize("chunk_size, overlap, ok", [
    (160, 5, True), (160, 6, False), (1500, 2, True), (1500, 46, True), (1500, 47, False), (8, 0, True),
    (32, 1, True), (32, 2, False),
])
def test_overlap_limit_is_half_the_chunk(base, tmp_path, chunk_size, overlap, ok):
    cfg = with_(with_(base, "chunking.chunk_size", chunk_size), "chunking.overlap_fragments", overlap)
    assert (problems(cfg, tmp_path) == []) is ok


# --- prompts -----------------------------------------------------------------------------------------


def test_prompt_without_its_placeholders(base, tmp_path):
    line = only(problems(with_(base, "prompts.probe", "Explain it."), tmp_path), "prompts.probe")
    assert "lacks the field(s) {answer}, {context}, {question}" in line
    assert "a file ending in .txt" in line


def test_prompt_with_an_unknown_field(base, tmp_path):
    line = only(problems(with_(base, "prompts.answer", "{context} {question} {hint}"), tmp_path), "prompts.answer")
    assert "{hint}" in line


def test_prompt_txt_file_that_does_not_exist(base, tmp_path):
    line = only(problems(with_(base, "prompts.answer", "prompts/missing.txt"), tmp_path), "prompts.answer")
    assert "template file not found: 'prompts/missing.txt'" in line


def test_prompt_txt_file_relative_to_the_workdir(base, tmp_path):
    (tmp_path / "answer.txt").write_text("Doc: {context}\nQ: {question}\n")
    assert problems(with_(base, "prompts.answer", "answer.txt"), tmp_path) == []
    (tmp_path / "bad.txt").write_text("Doc: {context}\n")
    assert "lacks the field(s) {question}" in only(problems(with_(base, "prompts.answer", "bad.txt"), tmp_path),
                                                   "prompts.answer")


# --- models ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["./no-such-model", "/no/such/model", "~/no-such-model-xyz", "../no-such"])
@pytest.mark.parametrize("key", ["models.policy", "models.embedder"])
def test_local_model_path_that_does_not_exist(base, tmp_path, key, value):
    line = only(problems(with_(base, key, value), tmp_path), key)
    assert f"model folder not found: {value!r}" in line


def test_model_folder_checks(base, tmp_path):
    (tmp_path / "empty-model").mkdir()
    assert "without config.json" in only(problems(with_(base, "models.policy", "empty-model"), tmp_path),
                                         "models.policy")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert problems(with_(base, "models.policy", "m"), tmp_path) == []
    assert problems(with_(base, "models.policy", str(tmp_path / "m")), tmp_path) == []
    (tmp_path / "weights.bin").write_text("x")
    assert "is a file" in only(problems(with_(base, "models.policy", "weights.bin"), tmp_path), "models.policy")
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "modules.json").write_text("[]")
    assert problems(with_(base, "models.embedder", "st"), tmp_path) == []


def test_hub_ids_pass_and_other_names_do_not(base, tmp_path):
    assert problems(with_(base, "models.policy", "meta-llama/Llama-3.1-8B-Instruct"), tmp_path) == []
    line = only(problems(with_(base, "models.policy", "models/llama/v1"), tmp_path), "models.policy")
    assert "'models/llama/v1' is neither an existing model folder" in line and "org/name" in line
    assert "is empty" in only(problems(with_(base, "models.embedder", " "), tmp_path), "models.embedder")


# --- data --------------------------------------------------------------------------------------------


def test_training_file_missing_empty_or_a_folder(base, tmp_path):
    line = only(problems(with_(base, "data.train", "data/missing.jsonl"), tmp_path), "data.train")
    assert f"file not found: 'data/missing.jsonl' (relative to {tmp_path})" in line
    assert "is empty: set it to the raw training JSONL" in only(problems(with_(base, "data.train", ""), tmp_path),
                                                                "data.train")
    assert "'data' is a directory" in only(problems(with_(base, "data.train", "data"), tmp_path), "data.train")
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    assert "holds no samples" in only(problems(with_(base, "data.train", "blank.jsonl"), tmp_path), "data.train")


def test_more_shards_than_samples(base, tmp_path):
    line = only(problems(with_(base, "data.shards", 7), tmp_path), "data.shards")
    assert "7 shards for 6 samples" in line and "1 shard(s) would be empty jobs; use at most 6" in line
    assert problems(with_(base, "data.shards", 6), tmp_path) == []


def test_shards_count_against_max_samples(base, tmp_path):
    cfg = with_(with_(base, "data.max_samples", 3), "data.shards", 4)
    line = only(problems(cfg, tmp_path), "data.shards")
    assert "4 shards for 3 samples" in line and "data.max_samples uses 3" in line
    assert problems(with_(with_(base, "data.max_samples", 100), "data.shards", 6), tmp_path) == []


def test_deep_false_skips_reading_file_contents(base, tmp_path):
    cfg = with_(base, "data.shards", 7)
    assert problems(cfg, tmp_path, deep=False) == []
    assert problems(with_(cfg, "data.train", "nope.jsonl"), tmp_path, deep=False)  # existence is still checked


@pytest.mark.parametrize("block_size", [1, 3, 7, 1 << 24])
def test_count_samples_skips_blank_lines(tmp_path, block_size):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\r\n   \n{"a": 2}\n\n{"a": 3}')  # BOM, CRLF, no final newline
    assert count_samples(path, block_size) == 3
    path.write_bytes(b"\xef\xbb\xbf\n\n")
    assert count_samples(path, block_size) == 0


# --- benchmarks, DeepSpeed ---------------------------------------------------------------------------


def test_benchmark_file_missing(base, tmp_path):
    cfg = with_(base, "eval.benchmarks.musique", {"path": "data/test/musique.jsonl", "format": "longbench"})
    line = only(problems(cfg, tmp_path), "eval.benchmarks.musique.path")
    assert "file not found: 'data/test/musique.jsonl'" in line
    assert "set eval.benchmarks.musique.hub: true to download it" in line


def test_benchmark_downloaded_from_the_hub_need_not_exist(base, tmp_path):
    cfg = with_(base, "eval.benchmarks.musique", {"path": "data/test/musique.jsonl", "format": "longbench",
                                                  "hub": True})
    assert problems(cfg, tmp_path) == []


def test_benchmark_format_must_match_the_file(base, tmp_path):
    cfg = with_(base, "eval.benchmarks.lb.format", "infinitebench")
    line = only(problems(cfg, tmp_path), "eval.benchmarks.lb.format")
    assert "'infinitebench' does not match the file" in line and "missing field 'answer'" in line


def test_benchmark_file_empty_or_not_json(base, tmp_path):
    (tmp_path / "data" / "lb.jsonl").write_text("\n")
    assert "holds no items" in only(problems(base, tmp_path), "eval.benchmarks.lb.path")
    (tmp_path / "data" / "lb.jsonl").write_text("\n{not json\n")
    assert "data/lb.jsonl:2: not valid JSON" in only(problems(base, tmp_path), "eval.benchmarks.lb.path")


def test_no_benchmarks(base, tmp_path):
    line = only(problems(with_(base, "eval.benchmarks", {}), tmp_path), "eval.benchmarks")
    assert "no benchmarks" in line


def test_deepspeed_config_missing(base, tmp_path):
    line = only(problems(with_(base, "dpo.deepspeed", "configs/ds.json"), tmp_path), "dpo.deepspeed")
    assert "file not found: 'configs/ds.json'" in line
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "ds.json").write_text("{}")
    assert problems(with_(base, "dpo.deepspeed", "configs/ds.json"), tmp_path) == []


# --- windows and budgets -----------------------------------------------------------------------------


def test_rollout_prompts_longer_than_the_engine_window(base, tmp_path):
    cfg = with_(with_(base, "rollout.top_k", 40), "engine.max_model_len", 4096)
    cfg = with_(with_(cfg, "chunking.chunk_size", 160), "sampling.max_tokens", 128)
    line = only(problems(cfg, tmp_path), "rollout.top_k")
    assert "40 chunks of chunking.chunk_size 160" in line and "need 6528 tokens" in line
    assert "engine.max_model_len 4096" in line
    assert problems(with_(cfg, "rollout.strategy", "full"), tmp_path) == []  # full: the whole context, no top_k
    assert problems(with_(cfg, "pairs.method", "sealong"), tmp_path) == []  # no rollout at all


def test_generation_budget_must_leave_room_for_a_prompt(base, tmp_path):
    cfg = with_(with_(base, "engine.max_model_len", 1024), "sampling.max_tokens", 1024)
    lines = problems(with_(cfg, "pairs.max_prompt_length", 4096), tmp_path)
    assert lines[0] == "config key 'sampling.max_tokens': 1024 new tokens leave no room for the prompt in " \
                       "engine.max_model_len 1024"
    line = only(problems(with_(base, "eval.max_tokens", 8192), tmp_path), "eval.max_tokens")
    assert "8192 new tokens" in line and "window of 8192 tokens" in line  # eval.max_model_len null: the engine's
    cfg = with_(with_(base, "eval.max_tokens", 4096), "eval.max_model_len", 4096)
    assert "window of 4096 tokens" in only(problems(cfg, tmp_path), "eval.max_tokens")


def test_pair_prompts_need_room_for_the_context(base, tmp_path):
    line = only(problems(with_(base, "pairs.reserve_tokens", 3000), tmp_path), "pairs.reserve_tokens")
    assert f"3000 reserved tokens plus answers of up to {base['sampling']['max_tokens']} tokens (sampling.max_tokens)" in line
    assert "pairs.max_prompt_length 3072" in line
    sealong = with_(with_(base, "pairs.method", "sealong"), "pairs.reserve_tokens", 2000)
    assert problems(sealong, tmp_path) == []  # SeaLong answers: pairs.sealong.max_tokens (1024 by default)
    assert "(pairs.sealong.max_tokens)" in only(problems(with_(sealong, "pairs.reserve_tokens", 2100), tmp_path),
                                                "pairs.reserve_tokens")


def test_cutoff_len_below_the_pair_prompt_length(base, tmp_path):
    line = only(problems(with_(base, "dpo.cutoff_len", 1000), tmp_path), "dpo.cutoff_len")
    assert "1000 is below pairs.max_prompt_length 3072" in line


# --- names -------------------------------------------------------------------------------------------


@pytest.mark.skipif(llamafactory_templates() is None, reason="LLaMA-Factory is not installed")
def test_unknown_chat_template(base, tmp_path):
    assert {"chatml", "llama3", "qwen"} <= llamafactory_templates()
    line = only(problems(with_(base, "models.template", "chatmll"), tmp_path), "models.template")
    assert "'chatmll' is not a LLaMA-Factory chat template; did you mean 'chatml'" in line


def test_run_named_base_is_reserved(base, tmp_path):
    line = only(problems(with_(base, "run", "base"), tmp_path), "run")
    assert "'base' is reserved" in line


# --- runs --------------------------------------------------------------------------------------------


def test_where_prefixes_every_key(base, tmp_path):
    assert problems(with_(base, "data.shards", 7), tmp_path, where="runs.a.")[0].startswith(
        "config key 'runs.a.data.shards': ")


def test_check_runs_names_the_run_that_causes_a_problem(base, tmp_path):
    cfg = with_(base, "runs", {"longmab": {}, "wide": {"rollout": {"top_k": 200}}})
    lines = check_runs(cfg, basedir=tmp_path)
    assert len(lines) == 1 and lines[0].startswith("config key 'runs.wide.rollout.top_k': 200 chunks"), lines


def test_check_runs_reports_a_shared_problem_once_with_its_plain_key(base, tmp_path):
    cfg = with_(with_(base, "runs", {"a": {}, "b": {"init": {"method": "random"}}}), "data.shards", 9)
    lines = check_runs(cfg, basedir=tmp_path)
    assert lines == [l for l in lines if l.startswith("config key 'data.shards': 9 shards")] and len(lines) == 1


def test_check_runs_integer_float_in_an_override(base, tmp_path):
    cfg = with_(base, "runs", {"a": {"rollout": {"top_k": 2.0}}})
    assert check_runs(cfg, basedir=tmp_path) == [
        "config key 'runs.a.rollout.top_k': must be an integer, got 2.0 (write 2)"]


def test_check_runs_with_validated_run_configs(base, tmp_path):
    from longmab.config import validate_runs

    cfg = with_(base, "runs", {"a": {"dpo": {"cutoff_len": 100}}, "b": {}})
    filled = validate_config(copy.deepcopy(cfg))
    lines = check_runs(cfg, validate_runs(filled), basedir=tmp_path)
    assert len(lines) == 1 and lines[0].startswith("config key 'runs.a.dpo.cutoff_len': 100 is below"), lines


def test_ensure_valid_lists_every_problem(base, tmp_path):
    cfg = with_(with_(base, "data.train", "nope.jsonl"), "dpo.deepspeed", "nope.json")
    with pytest.raises(ConfigError) as err:
        ensure_valid(cfg, basedir=tmp_path)
    text = str(err.value)
    assert text.startswith("invalid configuration:\n  ")
    assert "config key 'data.train': file not found: 'nope.jsonl'" in text
    assert "config key 'dpo.deepspeed': file not found: 'nope.json'" in text
    ensure_valid(base, basedir=tmp_path)  # no error


def test_command_line_strings_become_the_numbers_the_schema_wants():
    """`snakemake --config 'rollout={rounds: 4}'` hands '4' over as a string."""
    from longmab.config import coerce_cli_scalars

    c = {"rollout": {"rounds": "4", "strategy": "ucb"}, "dpo": {"learning_rate": "1.0e-4", "bf16": "false"},
         "seed": "7", "run": "123", "runs": {"a": {"rollout": {"top_k": "3"}}},
         "eval": {"max_samples": "many"}}
    changed = coerce_cli_scalars(c)
    assert c["rollout"] == {"rounds": 4, "strategy": "ucb"} and c["seed"] == 7
    assert c["dpo"]["learning_rate"] == 1e-4 and c["dpo"]["bf16"] is False
    assert c["run"] == "123"  # a string key stays a string
    assert c["runs"]["a"]["rollout"]["top_k"] == 3
    assert c["eval"]["max_samples"] == "many"  # not a number: left for the schema's message
    assert set(changed) == {"rollout.rounds", "dpo.learning_rate", "dpo.bf16", "seed", "runs.a.rollout.top_k"}


def _readme_config(tmp_path) -> Path:
    """The README's "Your own data and model" my.yaml, as written."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Your own data and model"):]
    block = section[section.index("```yaml") + len("```yaml"):]
    block = block[:block.index("```")]
    path = tmp_path / "my.yaml"
    path.write_text(textwrap.dedent(block))
    return path


def test_readme_user_config_gets_the_papers_settings_or_is_refused(tmp_path):
    """Over the paper config (as the README runs it) the user's config keeps the paper's values;
    merged over config.yaml's toy it is refused, naming the preset and the fix."""
    from longmab.config import check_runs, effective_config

    my = _readme_config(tmp_path)
    paper = yaml.safe_load((REPO / "configs" / "paper-llama3.yaml").read_text())
    full, sources = effective_config([REPO / "configs" / "paper-llama3.yaml", my], replace=True)
    assert full["preset"] == "paper-llama3" and full["models"]["policy"] == "meta-llama/Llama-3.1-8B-Instruct"
    for section, key in (("chunking", "chunk_size"), ("rollout", "rounds"), ("rollout", "top_k"),
                         ("sampling", "max_tokens"), ("eval", "max_input_len"), ("dpo", "learning_rate")):
        assert full[section][key] == paper[section][key], (section, key)
        assert sources[f"{section}.{key}"].endswith("paper-llama3.yaml")
    assert sources["models.policy"].endswith("my.yaml") and not any("synth" in b for b in full["eval"]["benchmarks"])
    assert not [p for p in check_runs(full, basedir=tmp_path, deep=False) if "preset" in p]
    toy, sources = effective_config([my])
    assert sources["chunking.chunk_size"].endswith("config.yaml")
    refused = [p for p in check_runs(toy, basedir=tmp_path, deep=False) if "preset" in p]
    assert len(refused) == 1 and "preset: custom" in refused[0] and "configs/paper-llama3.yaml" in refused[0]
    toy["preset"] = "custom"  # said explicitly: allowed
    assert not [p for p in check_runs(toy, basedir=tmp_path, deep=False) if "preset" in p]


def test_config_show_names_every_source(tmp_path, capsys):
    from longmab.cli import main

    my = tmp_path / "my.yaml"
    my.write_text("rollout: {rounds: 3}\n")
    assert main(["config", "show", "--configfile", str(my)]) == 0
    out = capsys.readouterr().out
    assert f"rollout.rounds: 3  # {my}" in out and "rollout.top_k: 2  # " in out
    assert "tables.confidence: 0.95  # default" in out


def test_all_problems_in_one_pass(base, tmp_path):
    """Four mistakes of different kinds (a bad value, an unknown key, a run's bad override, a missing
    file) are reported together, each once."""
    from longmab.config import all_problems

    cfg = with_(with_(base, "rollout.rounds", "x"), "chunking.bogus", 1)
    cfg = with_(cfg, "data.train", "data/missing.jsonl")
    cfg["runs"] = {"a": {"rollout": {"top_k": 0}}}
    lines = all_problems(cfg, basedir=tmp_path)
    keys = [ln.split("'", 2)[1] for ln in lines]
    assert sorted(keys) == ["chunking.bogus", "data.train", "rollout.rounds", "runs.a.rollout.top_k"], lines
    assert all_problems(base, basedir=tmp_path) == []

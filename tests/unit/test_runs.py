"""Named runs and output naming (longmab.runs): what runs share, what they never share."""

import copy
from pathlib import Path

import pytest
import yaml
from longmab.config import ConfigError, load_config, validate_config, validate_runs
from longmab.runs import (
    TAG_PATTERN,
    build_plan,
    deep_merge,
    make_tag,
    resolve_runs,
    slug,
)

REPO = Path(__file__).resolve().parents[2]


def embedded(**over) -> dict:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg.update(over)
    return validate_config(cfg)


def plan_of(cfg):
    return build_plan(cfg, configs=validate_runs(cfg))


def test_one_run_without_runs_key():
    plan = plan_of(embedded())
    assert list(plan.runs) == ["embedded"] and plan.study == "embedded"
    tags = plan.runs["embedded"]
    assert set(tags) == {"data", "probe", "embed", "rollout", "pairs", "dpo", "eval"}
    import re

    for stage, tag in tags.items():
        assert re.fullmatch(TAG_PATTERN, tag), (stage, tag)
    assert tags["pairs"].startswith("embedded-") and tags["probe"].startswith("SmolLM2-135M-")
    assert plan.base.startswith("base-SmolLM2-135M-")


def test_tags_are_deterministic_and_slug_free():
    a, b = plan_of(embedded()), plan_of(embedded())
    assert a.runs == b.runs and a.base == b.base
    assert make_tag("x", {"a": 1, "b": [1, 2]}) == make_tag("x", {"b": [1, 2], "a": 1})
    assert make_tag("x", {"a": 1}) != make_tag("x", {"a": 2})
    assert make_tag("x", {"a": 1}).split("-")[-1] == make_tag("other", {"a": 1}).split("-")[-1]
    assert slug("meta-llama/Llama-3.1-8B-Instruct") == "Llama-3.1-8B-Instruct"
    assert slug("/models/My Model/") == "My_Model"


def test_init_runs_share_one_probe_per_shard():
    cfg = embedded(runs={"p": {}, "q": {"init": {"method": "query_similarity"}}, "r": {"init": {"method": "random"}}})
    plan = plan_of(cfg)
    assert len({t["probe"] for t in plan.runs.values()}) == 1
    assert len({t["embed"] for t in plan.runs.values()}) == 3
    assert len({t["rollout"] for t in plan.runs.values()}) == 3
    assert len(plan.tags("probe")) == 1


def test_strategy_runs_share_their_embed():
    cfg = embedded(runs={"ucb": {}, "rk": {"rollout": {"strategy": "random"}}, "full": {"rollout": {"strategy": "full"}}})
    plan = plan_of(cfg)
    assert len({t["embed"] for t in plan.runs.values()}) == 1
    assert len({t["rollout"] for t in plan.runs.values()}) == 3
    assert plan.runs["rk"]["rollout"].startswith("random-r8-k2-")


def test_random_init_ignores_the_embedder():
    a = plan_of(embedded(runs={"r": {"init": {"method": "random"}}}))
    cfg = embedded(runs={"r": {"init": {"method": "random"}}})
    cfg["models"]["embedder"] = "/elsewhere/embedder"
    b = plan_of(cfg)
    assert a.runs["r"]["embed"] == b.runs["r"]["embed"]
    c = plan_of(embedded())
    cfg2 = embedded()
    cfg2["models"]["embedder"] = "/elsewhere/embedder"
    assert plan_of(cfg2).runs["embedded"]["embed"] != c.runs["embedded"]["embed"]


def test_dpo_change_keeps_everything_upstream_and_renames_the_adapter():
    a = plan_of(embedded())
    cfg = embedded()
    cfg["dpo"]["learning_rate"] = 1e-4
    b = plan_of(cfg)
    for stage in ("data", "probe", "embed", "rollout", "pairs"):
        assert a.runs["embedded"][stage] == b.runs["embedded"][stage], stage
    assert a.runs["embedded"]["dpo"] != b.runs["embedded"]["dpo"]  # never the same folder
    assert a.runs["embedded"]["eval"] != b.runs["embedded"]["eval"]
    assert a.base == b.base  # the base model's evaluation is not affected


def test_dpo_code_version_names_the_adapter():
    cfg = embedded()
    a = build_plan(cfg, dpo_code="v1", configs=validate_runs(cfg))
    b = build_plan(cfg, dpo_code="v2", configs=validate_runs(cfg))
    assert a.runs["embedded"]["pairs"] == b.runs["embedded"]["pairs"]
    assert a.runs["embedded"]["dpo"] != b.runs["embedded"]["dpo"]


def test_sealong_run_uses_data_not_probe():
    plan = plan_of(embedded(runs={"lm": {}, "sl": {"pairs": {"method": "sealong"}}}))
    sl = plan.runs["sl"]
    assert {"sealong", "mbr", "pairs", "dpo", "eval"} <= set(sl) and "probe" not in sl and "rollout" not in sl
    assert plan.stages["sealong"][sl["sealong"]]["data"] == plan.runs["lm"]["data"]
    assert sl["sealong"].startswith("n8-")
    assert plan.stages["sealong"][sl["sealong"]]["sampling"]["temperature"] == 0.7


def test_chunking_change_reruns_from_probe_only():
    a = plan_of(embedded())
    cfg = embedded()
    cfg["chunking"]["chunk_size"] = 200
    b = plan_of(cfg)
    assert a.runs["embedded"]["data"] == b.runs["embedded"]["data"]
    assert a.runs["embedded"]["probe"] != b.runs["embedded"]["probe"]
    assert a.base == b.base


def test_paper_configs_share_only_the_data():
    plans = [plan_of(load_config(REPO / "configs" / f"{n}.yaml")) for n in ("paper-llama3", "paper-qwen2")]
    folders = [{(s, t) for s, tags in p.stages.items() for t in tags} | {("eval", p.base)} for p in plans]
    shared = folders[0] & folders[1]
    assert shared and {s for s, _ in shared} == {"data"}, shared
    assert plans[0].study != plans[1].study


def test_run_overrides_are_validated_with_their_key():
    cfg = embedded(runs={"bad": {"rollout": {"top_k": 0}}})
    with pytest.raises(ConfigError, match=r"config key 'runs\.bad\.rollout\.top_k'"):
        validate_runs(cfg)
    with pytest.raises(ConfigError, match=r"runs\.x\.models"):
        resolve_runs({**embedded(), "runs": {"x": {"models": {"policy": "p"}}}})
    with pytest.raises(ConfigError, match="reserved"):
        resolve_runs({**embedded(), "runs": {"base": {}}})


def test_overrides_merge_deeply_and_leave_the_config_alone():
    cfg = embedded(runs={"a": {"rollout": {"rounds": 3}}})
    before = copy.deepcopy(cfg)
    runs = resolve_runs(cfg)
    assert runs["a"]["rollout"] == {**cfg["rollout"], "rounds": 3} and runs["a"]["run"] == "a"
    assert cfg == before
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_chain_holds_every_upstream_value():
    plan = plan_of(embedded())
    chain = plan.chain("eval", plan.runs["embedded"]["eval"])
    dpo = chain["model"]["dpo"]
    assert dpo["tag"] == plan.runs["embedded"]["dpo"]
    probe = dpo["pairs"]["rollout"]["embed"]["probe"]
    assert probe["chunking"]["chunk_size"] == embedded()["chunking"]["chunk_size"]
    assert probe["data"]["train"] == "data/train.jsonl"
    # the warmed-up embedded policy: its warm-up settings name every folder downstream
    assert probe["engine"]["policy"]["warmup"]["examples"] == embedded()["models"]["warmup"]["examples"]


def test_manifest_lists_runs_and_folders():
    plan = plan_of(embedded(runs={"lm": {}, "sl": {"pairs": {"method": "sealong"}}}))
    m = plan.manifest()
    assert m["runs"]["sl"]["mbr"].startswith("results/mbr/")
    assert m["base_eval"] == plan.base and plan.base in m["stages"]["eval"]
    assert plan.runs_of("eval", plan.base) == ["lm", "sl"]
    assert plan.runs_of("pairs", plan.runs["sl"]["pairs"]) == ["sl"]


def test_config_and_runs_do_not_import_each_other_in_a_circle():
    """runs.py (naming) sits below config.py (validation): it never imports config.py."""
    import ast

    tree = ast.parse((REPO / "workflow_scripts" / "longmab" / "runs.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "config" not in imported and "errors" in imported


def test_serving_adapters_renames_only_the_trained_rows_eval():
    """eval.adapters (LoRA serving) gives other numerics than the merged model: its own eval folder;
    everything else, the base row included, keeps its folder; a config without it keeps its names."""
    a = plan_of(embedded())
    cfg = embedded()
    cfg["eval"]["adapters"] = True
    b = plan_of(cfg)
    for stage in ("data", "probe", "embed", "rollout", "pairs", "dpo"):
        assert a.runs["embedded"][stage] == b.runs["embedded"][stage], stage
    assert a.runs["embedded"]["eval"] != b.runs["embedded"]["eval"] and a.base == b.base
    assert b.stages["eval"][b.runs["embedded"]["eval"]]["model"]["served"] == "adapter"
    assert "served" not in a.stages["eval"][a.runs["embedded"]["eval"]]["model"]
    cfg["eval"]["backend"] = "transformers"
    with pytest.raises(ConfigError, match="eval.adapters"):
        plan_of(cfg)


def test_lora_engine_args_fit_the_adapters_rank(tmp_path):
    import json

    from longmab.engines import lora_engine_args

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 12, "rank_pattern": {}}))
    assert lora_engine_args(tmp_path) == {"enable_lora": True, "max_lora_rank": 16, "max_loras": 1}
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "rank_pattern": {"q_proj": 40}}))
    assert lora_engine_args(tmp_path)["max_lora_rank"] == 64
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "modules_to_save": ["lm_head"]}))
    with pytest.raises(ValueError, match="modules_to_save"):
        lora_engine_args(tmp_path)
    with pytest.raises(ValueError, match="not a readable PEFT adapter"):
        lora_engine_args(tmp_path / "missing")

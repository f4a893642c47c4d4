"""bench/strategies.py runs end to end on a real engine (a smoke run; its numbers are not asserted
as figures, only as well-formed results of the four strategies at one budget)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, snakemake_env

pytestmark = pytest.mark.slow


def test_strategies_bench_small_run(tiny_run, tmp_path):
    out = tmp_path / "strategies.json"
    cmd = [sys.executable, str(REPO / "bench" / "strategies.py"), "--data", str(tiny_run / "data" / "train.jsonl"),
           "--limit", "2", "--rounds", "2", "--top-k", "1", "--max-tokens", "16", "--backend", "transformers",
           "--model", str(tiny_run / "results" / "models" / "policy"), "--all-probes", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    rows = {r["strategy"]: r for r in result["results"]}
    assert list(rows) == ["ucb-probe", "ucb-random", "ucb-query", "random-k", "full"]
    for r in rows.values():
        assert r["samples"] == 2 and r["generations"] == 4  # same budget: 2 samples x 2 rounds
        assert 0 <= r["evidence_all"] <= r["evidence_any"] <= 1 and 0 <= r["overhead_share"] < 1
        assert r["pairs"] <= 2 and r["gen_per_s"] > 0
    assert rows["full"]["evidence_all"] == 1.0  # the whole context holds every evidence passage
    assert rows["full"]["evidence_chance"] == 1.0 and 0 < rows["random-k"]["evidence_chance"] <= 1
    assert rows["full"]["prompt_tokens_per_gen"] > rows["ucb-probe"]["prompt_tokens_per_gen"]
    table = proc.stdout[proc.stdout.index("| strategy |"):]
    assert all(f"| {name} | 2 |" in table for name in rows)


def test_roofline_limits_and_one_engine_run(tiny_run, tmp_path):
    """bench/roofline.py measures the machine, derives the model's limits and scores one transformers
    run as a share of them (shares are ratios of two measurements: positive and finite)."""
    out = tmp_path / "roofline.json"
    cmd = [sys.executable, str(REPO / "bench" / "roofline.py"), "--model", str(tiny_run / "results" / "models" / "policy"),
           "--runs", "hf-fp32-t1@2", "--repeat", "1", "--max-tokens", "8", "--log-dir", str(tmp_path / "logs"),
           "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["model"]["layers"] > 0 and result["model"]["tied"] is True  # SmolLM2 ties its LM head
    for t, m in result["machine"].items():  # the better of the two measurements, per thread count
        assert m["gemm_model"] >= result["machine_first"][t]["gemm_model"] > 0
    [run] = result["runs"]
    assert run["rc"] == 0 and run["n"] == 2
    share = run["share"]
    assert 0 < share["prefill_share"] < 10 and (share["decode_share"] is None or 0 < share["decode_share"] < 10)
    assert "| hf-fp32-t1@2 | 2 | 1 |" in proc.stdout


def test_format_bench_small_run(tiny_run, tmp_path):
    """bench/format.py: a raw row and a warm-up row (2 examples, 1 step) on one item per set, with
    the transformers engine; the figures are well-formed shares."""
    out = tmp_path / "format.json"
    cmd = [sys.executable, str(REPO / "bench" / "format.py"), "--model", str(tiny_run / "results" / "models" / "policy"),
           "--variants", 'raw,warm:{"examples":2,"batch_size":2,"dtype":"float32"}', "--limit", "1",
           "--backend", "transformers", "--dtype", "float32", "--max-tokens", "8", "--work-dir", str(tmp_path / "w"),
           "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert list(rows) == ["raw", "warm"]
    for r in rows.values():
        assert r["items"] == 4 and r["probes"] == 1 and 0 <= r["marker_rate"] <= 1 and 0 <= r["subem"] <= 1
        assert 0 < r["tokens_per_answer"] <= 8
    assert rows["warm"]["warmup_steps"] == 1 and "warmup_seconds" not in rows["raw"]
    assert (tmp_path / "w" / "warm" / "warmup.json").exists()
    assert "| warm | 4 |" in proc.stdout


def test_budget_bench_reads_a_finished_run(tiny_run, tmp_path):
    """bench/budget.py: per-stage job seconds, engine starts and token counts of the tiny run."""
    out = tmp_path / "budget.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "budget.py"), "--workdir", str(tiny_run),
                           "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    stages = json.loads(out.read_text())
    for stage in ("probe", "rollout", "eval"):
        assert stages[stage]["jobs"] >= 1 and stages[stage]["prompt_tokens"] > 0, stage
        assert stages[stage]["generated_tokens"] > 0 and stages[stage]["engine_starts"] >= 1, stage
    assert stages["dpo_train"]["seconds"] > 0
    assert "| rollout |" in proc.stdout
    empty = subprocess.run([sys.executable, str(REPO / "bench" / "budget.py"), "--workdir", str(tmp_path)],
                           capture_output=True, text=True, timeout=120)
    assert empty.returncode == 1 and "no benchmark files" in empty.stderr


def test_pairs_vs_rounds_reads_a_finished_rollout(tiny_run, tmp_path):
    """bench/pairs_vs_rounds.py: pairs of every round prefix; the last row equals the pair stage's
    count (a pair needs unequal strict rewards, whatever the seeded choice among ties)."""
    out = tmp_path / "pvr.json"
    manifest = json.loads((tiny_run / "results" / "runs" / "tiny.json").read_text())
    rollout = manifest["runs"]["tiny"]["rollout"]
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "pairs_vs_rounds.py"), "--rollout",
                           str(tiny_run / rollout / "*.jsonl"), "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = json.loads(out.read_text())["table"]
    assert [r["rounds"] for r in table] == list(range(1, len(table) + 1)) and table[0]["pairs"] == 0
    assert all(a["pairs"] <= b["pairs"] for a, b in zip(table, table[1:]))  # more rounds never lose a pair
    stats = json.loads((tiny_run / manifest["runs"]["tiny"]["pairs"] / "stats.json").read_text())
    assert table[-1]["pairs"] == stats["pairs"]


def test_dryrun_scale_bench_plans_the_paper_dag():
    """bench/dryrun_scale.py on tiny arguments: one dry run of the paper config with 100 samples."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "dryrun_scale.py"), "--samples", "100",
                           "--repeat", "1"], capture_output=True, text=True, env=snakemake_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "run 1: " in proc.stdout and "1147 jobs planned" in proc.stdout  # 1,146 + rule all
    assert "dry run at paper scale: min" in proc.stdout


def test_engines_bench_small_run(tiny_run, tmp_path):
    """bench/engines.py: one transformers variant on one short prompt, its row and its JSON."""
    out = tmp_path / "engines.json"
    cmd = [sys.executable, str(REPO / "bench" / "engines.py"), "--model", str(tiny_run / "results" / "models" / "policy"),
           "--variants", "hf-fp32-t1", "--n-prompts", "1", "--min-tokens", "40", "--max-context", "60",
           "--max-tokens", "4", "--no-phases", "--log-dir", str(tmp_path / "logs"), "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    [row] = json.loads(out.read_text())
    assert row["rc"] == 0 and row["n"] == 1 and row["start_s"] > 0 and len(row["outputs_sha"]) == 8
    assert "| hf-fp32-t1 |" in proc.stdout


def test_rollout_async_and_sim_benches_small_run(tiny_run, tmp_path):
    """bench/rollout_async.py (sync vs async on one real engine) feeds bench/rollout_sim.py."""
    out = tmp_path / "async.json"
    cmd = [sys.executable, str(REPO / "bench" / "rollout_async.py"), "--data", str(tiny_run / "data" / "train.jsonl"),
           "--samples", "2", "--rounds", "2", "--max-tokens", "8", "--backend", "transformers",
           "--model", str(tiny_run / "results" / "models" / "policy"), "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result, "rollout_async wrote nothing"
    sim = subprocess.run([sys.executable, str(REPO / "bench" / "rollout_sim.py"), "--json", str(out),
                          "--samples", "3", "--rounds", "2", "--max-tokens", "8", "--trials", "3"],
                         cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True, timeout=300)
    assert sim.returncode == 0, sim.stderr[-4000:]
    assert "|" in sim.stdout


def test_frontier_bench_one_tiny_point(tmp_path):
    """bench/frontier.py: one point of 2 samples through preference_data (warm-up off, 1 round)."""
    out = tmp_path / "frontier.json"
    cmd = [sys.executable, str(REPO / "bench" / "frontier.py"), "--points", "transformers:2",
           "--work-dir", str(tmp_path / "work"), "--json", str(out),
           "--set", "models.warmup.enabled=false", "--set", "rollout.rounds=1", "--set", "sampling.max_tokens=8",
           "--set", "data.shards=1"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    [row] = json.loads(out.read_text())
    assert row["rc"] == 0 and row["point"] == "transformers:2" and row["wall_s"] > 0
    assert "| transformers:2 |" in proc.stdout


def test_run_modes_bench_two_sides_until_data(tmp_path):
    """bench/run_modes.py: two sides (a commit, and the same commit with a config override) side by
    side, stopped after the data rule; the table has both rows and the ratio column."""
    out = tmp_path / "modes.json"
    cmd = [sys.executable, str(REPO / "bench" / "run_modes.py"), "--side", "a=HEAD", "--side",
           "b=HEAD:engine={mode: server}", "--until", "data", "--work", str(tmp_path / "work"), "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads(out.read_text())
    assert [r["side"] for r in rows] == ["a", "b"] and rows[1]["config"] == ["engine={mode: server}"]
    assert all(r["wall_s"] > 0 and r["engine_starts"] == 0 and r["jobs"] >= 1 for r in rows)
    assert "| a |" in proc.stdout and "| 1.00 |" in proc.stdout


def test_setup_public_index_script_parses():
    """bench/setup_public_index.sh downloads several GB from PyPI (opt-in, not run offline): its
    syntax is checked here."""
    proc = subprocess.run(["bash", "-n", str(REPO / "bench" / "setup_public_index.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_adapters_bench_small_run(tiny_run, tmp_path):
    """bench/adapters.py: the tiny run's trained model as merged model and as served adapter, one item
    of each benchmark: a row each, the merged row identical to itself."""
    pytest.importorskip("vllm")
    out = tmp_path / "adapters.json"
    cmd = [sys.executable, str(REPO / "bench" / "adapters.py"), "--workdir", str(tiny_run), "--configfile",
           "tiny.yaml", "--max-items", "1", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=snakemake_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    merged, adapter = json.loads(out.read_text())
    assert (merged["variant"], adapter["variant"]) == ("merged", "adapter")
    assert set(merged["subem"]) == set(adapter["subem"]) and all(len(v) == 1 for v in merged["outputs"].values())
    n = len(merged["outputs"])
    assert f"| merged | {merged['start_s']:.1f} | {merged['eval_s']:.1f} | {n} / {n} |" in proc.stdout

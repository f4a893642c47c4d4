"""Benchmark tables from metrics rows alone (hand-computed numbers)."""

import csv
import io

import pytest
from longmab.tables import TableError, benchmark_table, to_csv, to_markdown


def row(model, bench, n, subem, em, f1):
    return {"model": model, "benchmark": bench, "n": n, "subem": subem, "em": em, "f1": f1}


ROWS = [
    # two sets, both far below 50 items (the reference prints nothing for those)
    row("tiny", "musique", 2, 50.0, 0.0, 25.0),
    row("base", "musique", 2, 0.0, 0.0, 10.0),
    row("base", "longbook", 3, 100 / 3, 0.0, 20.0),
    row("tiny", "longbook", 3, 200 / 3, 100 / 3, 40.0),
]


def test_rows_averages_and_deltas():
    t = benchmark_table(ROWS)
    assert [r["model"] for r in t] == ["base", "tiny"]  # base first
    base, tiny = t
    assert base["musique_n"] == 2 and base["longbook_n"] == 3
    # base: SubEM (0 + 33.33) / 2 = 16.67; tiny: (50 + 66.67) / 2 = 58.33; delta 41.67
    assert base["avg_subem"] == pytest.approx(50 / 3)
    assert tiny["avg_subem"] == pytest.approx(175 / 3)
    assert tiny["delta_subem"] == pytest.approx(125 / 3)
    assert base["delta_subem"] == 0.0
    # EM: base 0, tiny 16.67; F1: base 15, tiny 32.5
    assert tiny["avg_em"] == pytest.approx(50 / 3)
    assert base["avg_f1"] == pytest.approx(15.0)
    assert tiny["delta_f1"] == pytest.approx(17.5)


def test_order_arguments_and_no_base():
    t = benchmark_table(ROWS, models=["tiny"], benchmarks=["longbook", "musique"])
    assert [r["model"] for r in t] == ["tiny"]
    assert t[0]["delta_subem"] is None
    assert "delta_subem" in t[0]
    assert ",".join(to_csv(t).splitlines()[1].split(",")[-3:]) == ",,"


def test_csv():
    text = to_csv(benchmark_table(ROWS))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0])[:5] == ["model", "musique_n", "musique_subem", "musique_em", "musique_f1"]
    assert rows[0]["model"] == "base" and rows[1]["model"] == "tiny"
    assert rows[1]["longbook_subem"] == "66.6667"
    assert rows[1]["avg_subem"] == "58.3333"
    assert rows[1]["delta_subem"] == "41.6667"
    assert rows[0]["musique_n"] == "2"


def test_markdown():
    md = to_markdown(benchmark_table(ROWS))
    lines = md.splitlines()
    assert lines[0] == "| Model | musique (n=2) | longbook (n=3) | Avg | Δ vs base |"
    assert lines[2] == "| base | 0.0 | 33.3 | 16.7 | — |"
    assert lines[3] == "| tiny | 50.0 | 66.7 | 58.3 | +41.7 |"


def test_missing_or_duplicate_cells():
    with pytest.raises(TableError, match="no metrics for model 'tiny' on benchmark 'longbook'"):
        benchmark_table(ROWS[:3])
    with pytest.raises(TableError, match="two metrics rows"):
        benchmark_table(ROWS + [ROWS[0]])


# --------------------------------------------------------------------------------------------------
# The study's main table (bootstrap) and data-quality table

from longmab.tables import (  # noqa: E402
    data_quality_table,
    data_quality_to_csv,
    data_quality_to_markdown,
    main_table,
    main_to_csv,
    main_to_markdown,
    paired_bootstrap,
)


def mrow(model, bench, scores, tag="t-00000000"):
    """A metrics row with per-item SubEM scores (0-1) and a provenance block."""
    n = len(scores)
    mean = 100 * sum(scores) / n
    return {"model": model, "benchmark": bench, "n": n, "subem": mean, "em": 0.0, "f1": mean,
            "items": {"id": [str(i) for i in range(n)], "subem": scores, "em": [0] * n, "f1": scores},
            "provenance": {"tag": tag, "model": {"model": f"/m/{model}", "revision": None,
                                                 "fingerprint": f"ff-{model}"},
                           "git_commit": "abc", "seed": 42, "settings_sha": "s1"}}


def test_paired_bootstrap_hand_case():
    import numpy as np

    base = {"b": {"0": 0.0, "1": 0.0, "2": 100.0, "3": 100.0}}
    same = paired_bootstrap(base, base, ["b"], 500, 0.95, np.random.default_rng(0))
    assert same == (0.0, 0.0, 0.0)  # identical models: every resample differs by 0
    better = {"b": {"0": 100.0, "1": 100.0, "2": 100.0, "3": 100.0}}
    d, lo, hi = paired_bootstrap(base, better, ["b"], 2000, 0.95, np.random.default_rng(0))
    assert d == 50.0 and 0.0 <= lo < 50.0 < hi <= 100.0
    assert paired_bootstrap(base, better, ["b"], 0, 0.95, np.random.default_rng(0)) == (50.0, None, None)
    with pytest.raises(TableError, match="different items"):
        paired_bootstrap(base, {"b": {"0": 1.0}}, ["b"], 10, 0.95, np.random.default_rng(0))


def test_main_table_rows_cis_and_provenance():
    rows = [mrow("base", "x", [0, 0, 1, 1]), mrow("run", "x", [1, 1, 1, 1], tag="run-12345678"),
            mrow("base", "y", [0, 1]), mrow("run", "y", [0, 1], tag="run-12345678")]
    t = main_table(rows, models=["base", "run"], benchmarks=["x", "y"], resamples=1000, seed=3)
    base, run = t
    assert run["delta_subem"] == pytest.approx((50 + 0) / 2)
    assert run["delta_subem_lo"] <= run["delta_subem"] <= run["delta_subem_hi"]
    assert base["delta_subem_lo"] is None and base["x_subem_lo"] <= 50 <= base["x_subem_hi"]
    # the Avg's own interval: resampled within each benchmark, averaged
    assert base["avg_subem_lo"] <= base["avg_subem"] <= base["avg_subem_hi"] and base["avg_subem_lo"] < 50
    assert run["avg_subem_lo"] > 0  # run: 100 % on x, 50 % on y, so never below 25
    assert run["eval_dir"] == "results/eval/run-12345678" and run["git_commit"] == "abc"
    assert main_table(rows, models=["base", "run"], benchmarks=["x", "y"], resamples=1000, seed=3) == t  # seeded
    csv_text = main_to_csv(t)
    header = csv_text.splitlines()[0].split(",")
    assert {"delta_subem_lo", "model_fingerprint", "git_commit", "x_subem_hi"} <= set(header)
    md = main_to_markdown(t)
    assert "| run |" in md and "[+" in md and "95 %" in md


def test_twin_models_are_refused():
    """Two rows of different names with the same weights (e.g. a trained row whose merge fell back to
    the base model) stop the table with a message naming both."""
    rows = [mrow("base", "x", [0, 1]), mrow("run", "x", [0, 1])]
    rows[1]["provenance"]["model"]["fingerprint"] = rows[0]["provenance"]["model"]["fingerprint"]
    with pytest.raises(TableError, match="'base' and 'run' have the same weights"):
        main_table(rows, models=["base", "run"], benchmarks=["x"], resamples=10)
    rows[1]["provenance"]["model"]["fingerprint"] = "other"
    rows[1]["provenance"]["model"]["adapter"] = {"model": "results/dpo/run-1/adapter", "fingerprint": "ad"}
    (_, run) = main_table(rows, models=["base", "run"], benchmarks=["x"], resamples=10)
    assert run["adapter_path"] == "results/dpo/run-1/adapter" and run["adapter_fingerprint"] == "ad"
    # the same model on two benchmarks is one model, not twins
    main_table([mrow("base", "x", [0]), mrow("base", "y", [1])], models=["base"], benchmarks=["x", "y"])
    # the same weights asked through another chat template (an external row) are another model
    rows = [mrow("base", "x", [0, 1]), mrow("templated", "x", [1, 1])]
    rows[1]["provenance"]["model"]["fingerprint"] = rows[0]["provenance"]["model"]["fingerprint"]
    rows[1]["provenance"]["model"]["chat_template"] = {"path": "t.jinja", "sha256": "ab"}
    assert len(main_table(rows, models=["base", "templated"], benchmarks=["x"], resamples=10)) == 2


def test_main_table_needs_item_scores():
    bare = [{"model": "base", "benchmark": "x", "n": 1, "subem": 0.0, "em": 0.0, "f1": 0.0}]
    with pytest.raises(TableError, match="per-item"):
        main_table(bare, benchmarks=["x"])


def test_data_quality_rows():
    stats = {
        "lm": {"method": "longmab", "samples_in": 24, "probes_kept": 9, "pairs": 3, "ties_skipped": 6,
               "mean_chosen_reward": 0.6, "mean_rejected_reward": 0.1, "mean_distinct_responses": 7.5,
               "evidence_hit_rate": {"all": 0.9, "any": 1.0, "round1_all": 1.0}, "generations": 72,
               "engine_seconds": 12.5},
        "sl": {"method": "sealong", "samples_in": 24, "probes_kept": None, "pairs": 0, "ties_skipped": 24,
               "mean_chosen_reward": 0.0, "mean_rejected_reward": 0.0, "generations": 192},
    }
    t = data_quality_table(stats)
    assert t[0]["reward_gap"] == pytest.approx(0.5) and t[0]["evidence_round1"] == 1.0
    assert t[1]["reward_gap"] is None and t[1]["probes_kept"] is None  # no pairs: no gap
    text = data_quality_to_csv(t)
    assert text.splitlines()[0].startswith("run,method,samples_in,probes_kept,pairs")
    assert text.splitlines()[2].split(",")[3] == ""
    assert "| sl | sealong |" in data_quality_to_markdown(t)

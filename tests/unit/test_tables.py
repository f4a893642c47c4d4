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

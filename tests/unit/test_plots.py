"""Figures: the numbers plotted and non-trivial PNGs, also for empty inputs."""

from longmab.evidence import evidence_chunks
import pytest
from longmab.plots import (
    arm_value_history,
    loss_curve,
    plot_arm_values,
    plot_benchmark_bars,
    plot_dpo_loss,
    plot_reward_per_round,
    reward_per_round,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rollout_row(rid, rewards, evidence=(2,)):
    rounds = []
    values = [0.5, 0.2, 0.1]
    for t, r in enumerate(rewards, start=1):
        values = [v + 0.1 * t for v in values]
        rounds.append({"round": t, "selected": [0, t % 3], "reward": r, "values": list(values), "response": "x"})
    return {"id": rid, "chunks": ["a", "b", "c"], "chunk_passages": [[1], [1, 2], [3]], "evidence": list(evidence),
            "init_values": [0.5, 0.2, 0.1], "rounds": rounds}


ROWS = [rollout_row("s1", [0.0, 1.0, 0.5]), rollout_row("s2", [1.0, 0.0]), {"id": "s3", "chunks": [], "rounds": []}]


def is_png(path, min_bytes=5000):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > min_bytes


def test_reward_per_round():
    rounds, means, counts = reward_per_round(ROWS)
    assert rounds == [1, 2, 3] and means == [0.5, 0.5, 0.5] and counts == [2, 2, 1]


def test_evidence_and_history():
    row = ROWS[0]
    assert evidence_chunks(row) == [False, True, False]  # chunk 1 overlaps passage 2
    assert evidence_chunks({"chunk_passages": [[1]]}) == [False]  # no annotation
    h = arm_value_history(row)
    assert h.shape == (4, 3) and list(h[0]) == [0.5, 0.2, 0.1]


def test_loss_curve_skips_non_loss_rows():
    log = [{"current_steps": 1, "loss": 0.69}, {"current_steps": 2, "loss": 0.5}, {"current_steps": 2, "eval_loss": 0.4}]
    assert loss_curve(log) == ([1, 2], [0.69, 0.5])
    assert loss_curve([{"step": 3, "loss": 1.0}]) == ([3], [1.0])  # trainer_state log_history rows


def test_pngs(tmp_path):
    out = plot_reward_per_round(ROWS, tmp_path / "r.png")
    assert out["mean_reward"] == [0.5, 0.5, 0.5]
    out = plot_arm_values(ROWS, tmp_path / "a.png", n_samples=3)
    assert [s["id"] for s in out["samples"]] == ["s1", "s2"]
    plot_dpo_loss([{"current_steps": 1, "loss": 0.69}, {"current_steps": 2, "loss": 0.6}], tmp_path / "l.png")
    metrics = [{"model": "tiny", "benchmark": "b1", "subem": 50.0}, {"model": "base", "benchmark": "b1", "subem": 25.0},
               {"model": "base", "benchmark": "b2", "subem": 0.0}, {"model": "tiny", "benchmark": "b2", "subem": 100.0}]
    out = plot_benchmark_bars(metrics, tmp_path / "b.png")
    assert out["models"] == ["base", "tiny"] and out["groups"] == ["b1", "b2", "average"]
    assert out["values"]["tiny"] == [50.0, 100.0, 75.0]
    for name in "ralb":
        assert is_png(tmp_path / f"{name}.png"), name


def test_empty_inputs_still_make_figures(tmp_path):
    plot_reward_per_round([], tmp_path / "r.png")
    plot_arm_values([], tmp_path / "a.png")
    plot_dpo_loss([], tmp_path / "l.png")
    plot_benchmark_bars([], tmp_path / "b.png")
    for name in "ralb":
        assert is_png(tmp_path / f"{name}.png", min_bytes=1000), name
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_dpo_figure_has_accuracy_and_margin_panels_when_logged(tmp_path):
    from longmab.plots import metric_curve

    state = [{"step": 1, "loss": 0.69, "rewards/accuracies": 0.0, "rewards/margins": 0.0},
             {"step": 2, "loss": 0.6, "rewards/accuracies": 1.0, "rewards/margins": 0.3},
             {"step": 2, "eval_loss": 0.5, "rewards/accuracies": 0.5}]
    assert metric_curve(state, "rewards/margins") == ([1, 2], [0.0, 0.3])
    out = plot_dpo_loss({"a": state}, tmp_path / "d.png")
    assert out["a"]["rewards/accuracies"] == [0.0, 1.0] and (tmp_path / "d.png").stat().st_size > 0


def test_evidence_per_round_plot(tmp_path):
    from longmab.plots import plot_evidence_per_round

    rows = [{"evidence": [2], "chunk_passages": [[1], [2], [3]],
             "rounds": [{"round": 1, "selected": [1]}, {"round": 2, "selected": [0]}]}]
    out = plot_evidence_per_round({"ucb": rows, "none": [{"rounds": []}]}, tmp_path / "e.png")
    assert [r["all"] for r in out["ucb"]["per_round"]] == [1.0, 0.0]
    assert out["ucb"]["chance_all"] == pytest.approx(1 / 3)
    assert (tmp_path / "e.png").stat().st_size > 0

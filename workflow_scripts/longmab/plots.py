"""Figures (matplotlib, Agg backend, PNG): rollout rewards, arm values, DPO loss, benchmark bars.

Each function takes plain rows (rollout rows, trainer-log rows, metrics rows), writes one PNG
atomically and returns the numbers it plotted (for tests). Empty inputs give a figure that says so
rather than an error: a run in which, say, every probe was dropped still gets its report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from .evidence import evidence_chunks
from .io import _tmp_sibling

DPI = 110
_LABELS = {"subem": "SubEM", "em": "EM", "f1": "F1"}


def _save(fig, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path, ".png")
    try:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a figure is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------------------------------
# Rollout


def reward_per_round(rollout_rows: Sequence[Mapping]) -> tuple[list[int], list[float], list[int]]:
    """(rounds, mean reward over the samples that have that round, number of such samples)."""
    by_round: dict[int, list[float]] = {}
    for row in rollout_rows:
        for r in row.get("rounds", []):
            by_round.setdefault(int(r["round"]), []).append(float(r["reward"]))
    rounds = sorted(by_round)
    return rounds, [float(np.mean(by_round[t])) for t in rounds], [len(by_round[t]) for t in rounds]


def plot_reward_per_round(rollout_rows: Sequence[Mapping] | Mapping[str, Sequence[Mapping]],
                          path: str | os.PathLike) -> dict:
    """Mean rollout reward per round: one line per run (``{run: rows}``) or for one list of rows
    (with the per-sample rewards as faint dots)."""
    by_run = dict(rollout_rows) if isinstance(rollout_rows, Mapping) else {"": list(rollout_rows)}
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    out: dict = {}
    for i, (run, rows) in enumerate(by_run.items()):
        rounds, means, counts = reward_per_round(rows)
        out[run] = {"rounds": rounds, "mean_reward": means, "samples": counts}
        if not rounds:
            continue
        if len(by_run) == 1:
            for row in rows:
                xs = [int(r["round"]) for r in row.get("rounds", [])]
                ys = [float(r["reward"]) for r in row.get("rounds", [])]
                ax.scatter(xs, ys, s=10, color="0.7", alpha=0.6, zorder=1)
        label = f"{run + ': ' if run else ''}mean over {max(counts)} samples"
        ax.plot(rounds, means, marker="o", color=f"C{i}", zorder=2, label=label)
    if not any(v["rounds"] for v in out.values()):
        _empty(ax, "no rollout rounds (every probe dropped?)")
    else:
        ax.set_xlabel("rollout round")
        ax.set_ylabel("reward  (SubEM + F1) / 2")
        ax.set_ylim(-0.03, 1.03)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    ax.set_title("Rollout reward per round")
    _save(fig, path)
    return out[""] if "" in out and len(out) == 1 else out


def arm_value_history(row: Mapping) -> np.ndarray:
    """Arm values over rounds, shape (n_rounds + 1, n_chunks): row 0 = initial values."""
    hist = [list(map(float, row.get("init_values") or []))] + [list(map(float, r["values"])) for r in row.get("rounds", [])]
    return np.asarray(hist, dtype=float) if hist and hist[0] else np.zeros((0, 0))


def pick_samples(rollout_rows: Sequence[Mapping], n: int) -> list[Mapping]:
    """Up to ``n`` rows with rounds, preferring rows with evidence annotations, in file order."""
    rows = [r for r in rollout_rows if r.get("rounds") and r.get("chunks")]
    rows.sort(key=lambda r: not any(evidence_chunks(r)))  # stable: evidence rows first
    return rows[:n]


def plot_arm_values(rollout_rows: Sequence[Mapping], path: str | os.PathLike, n_samples: int = 3) -> dict:
    """Arm (chunk) values over rounds for a few samples; evidence chunks in colour, others grey.

    Round 0 is the initial value (similarity to the probe by default). A dot marks each round in
    which the arm was pulled.
    """
    rows = pick_samples(rollout_rows, n_samples)
    fig, axes = plt.subplots(1, max(1, len(rows)), figsize=(4.2 * max(1, len(rows)), 3.6), squeeze=False)
    plotted = []
    if not rows:
        _empty(axes[0, 0], "no rollout rows")
    for ax, row in zip(axes[0], rows):
        values = arm_value_history(row)
        ev = evidence_chunks(row)
        ev += [False] * (values.shape[1] - len(ev))
        xs = np.arange(values.shape[0])
        for c in range(values.shape[1]):
            style = {"color": "C3", "lw": 2.0, "zorder": 3} if ev[c] else {"color": "0.6", "lw": 1.0, "zorder": 2}
            ax.plot(xs, values[:, c], **style)
            pulled = [r["round"] for r in row["rounds"] if c in r["selected"]]
            ax.scatter(pulled, values[pulled, c], s=14, color=style["color"], zorder=style["zorder"])
        ax.set_title(f"{row['id']}: {values.shape[1]} chunks, {sum(ev)} with evidence", fontsize=9)
        ax.set_xlabel("round (0 = initial value)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        plotted.append({"id": row["id"], "values": values.tolist(), "evidence": ev})
    axes[0, 0].set_ylabel("arm value")
    if rows:
        axes[0, 0].plot([], [], color="C3", lw=2, label="evidence chunk")
        axes[0, 0].plot([], [], color="0.6", lw=1, label="other chunk")
        axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle("UCB arm values over rounds (dots: pulled)", fontsize=11)
    _save(fig, path)
    return {"samples": plotted}


def plot_evidence_per_round(rollout_rows: Mapping[str, Sequence[Mapping]], path: str | os.PathLike,
                            title: str = "Evidence coverage per round") -> dict:
    """Share of samples whose selected chunks cover every evidence passage, per rollout round: a
    solid line per run, and dashed at the same colour the share expected of as many random chunks
    (:func:`longmab.evidence.evidence_hit_rates`). Empty note without evidence annotations."""
    from .evidence import evidence_hit_rates

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    out = {}
    for i, (run, rows) in enumerate(rollout_rows.items()):
        rates = evidence_hit_rates(rows)
        out[run] = rates
        if not rates["per_round"]:
            continue
        x = [r["round"] for r in rates["per_round"]]
        ax.plot(x, [r["all"] for r in rates["per_round"]], marker="o", color=f"C{i}",
                label=f"{run}: all evidence (mean {rates['all']:.2f})" if run else None)
        if rates["chance_all"] is not None:
            ax.axhline(rates["chance_all"], color=f"C{i}", linestyle="--", linewidth=1,
                       label=f"{run}: random chunks ({rates['chance_all']:.2f})" if run else None)
    if not any(v["per_round"] for v in out.values()):
        _empty(ax, "no evidence annotations in the rollout rows")
    else:
        ax.set_xlabel("rollout round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("share of samples covering all evidence")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax.set_title(title)
    _save(fig, path)
    return out


# --------------------------------------------------------------------------------------------------
# DPO


def loss_curve(trainer_log: Sequence[Mapping]) -> tuple[list[int], list[float]]:
    """(step, loss) of the training-loss entries of a LLaMA-Factory trainer log / log_history."""
    steps, losses = [], []
    for r in trainer_log:
        if r.get("loss") is None:
            continue
        steps.append(int(r.get("current_steps", r.get("step", len(steps) + 1))))
        losses.append(float(r["loss"]))
    return steps, losses


def metric_curve(trainer_log: Sequence[Mapping], key: str) -> tuple[list[int], list[float]]:
    """(step, value) of the training entries of a trainer log / log_history that carry ``key``
    (e.g. ``rewards/accuracies``, ``rewards/margins`` in the DPO trainer's ``log_history``)."""
    steps, values = [], []
    for r in trainer_log:
        if r.get(key) is None or "eval_loss" in r:
            continue
        steps.append(int(r.get("current_steps", r.get("step", len(steps) + 1))))
        values.append(float(r[key]))
    return steps, values


DPO_PANELS = (("loss", "loss"), ("rewards/accuracies", "reward accuracy"), ("rewards/margins", "reward margin"))


def plot_dpo_loss(trainer_log: Sequence[Mapping] | Mapping[str, Sequence[Mapping]], path: str | os.PathLike,
                  title: str = "DPO training") -> dict:
    """Training loss per step (DPO sigmoid loss + pref_ftx x SFT loss, as LLaMA-Factory logs it) and,
    where the log has them (``trainer_state.json``'s ``log_history``), the trainer's reward accuracy
    (share of pairs whose implicit reward ranks chosen above rejected) and margin: one line per run
    (``{run: log rows}``) or for one log."""
    by_run = dict(trainer_log) if isinstance(trainer_log, Mapping) else {"": list(trainer_log)}
    panels = [p for p in DPO_PANELS if p[0] == "loss"
              or any(metric_curve(rows, p[0])[0] for rows in by_run.values())]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    out = {}
    for i, (run, log_rows) in enumerate(by_run.items()):
        steps, losses = loss_curve(log_rows)
        out[run] = {"steps": steps, "loss": losses}
        for ax, (key, label) in zip(axes[0], panels):
            x, y = (steps, losses) if key == "loss" else metric_curve(log_rows, key)
            if key != "loss":
                out[run][key] = y
            if x:
                ax.plot(x, y, marker="o" if len(x) <= 50 else None, color=f"C{i}", label=run or None)
    for ax, (key, label) in zip(axes[0], panels):
        if not any(v["steps"] for v in out.values()):
            _empty(ax, "no loss entries in the trainer log")
            continue
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if len(by_run) > 1 and key == "loss":
            ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)
    return out[""] if "" in out and len(out) == 1 else out


# --------------------------------------------------------------------------------------------------
# Benchmarks


def plot_benchmark_bars(metrics_rows: Sequence[Mapping], path: str | os.PathLike, metric: str = "subem",
                        base: str = "base", intervals: Mapping[tuple[str, str], tuple] | None = None,
                        title: str | None = None) -> dict:
    """Grouped bars: ``metric`` (percent) per benchmark, one bar per model (base first), plus the
    average; ``intervals`` ``{(model, benchmark): (low, high)}`` draws whiskers (e.g. bootstrap 95 %
    intervals; missing or ``None`` bounds draw none)."""
    models: list[str] = []
    benches: list[str] = []
    cell: dict[tuple[str, str], float] = {}
    for r in metrics_rows:
        m, b = str(r["model"]), str(r["benchmark"])
        models += [m] if m not in models else []
        benches += [b] if b not in benches else []
        cell[(m, b)] = float(r[metric])
    models = sorted(models, key=lambda m: (m != base, models.index(m)))
    groups = benches + (["average"] if len(benches) > 1 else [])
    for m in models:
        vals = [cell[(m, b)] for b in benches if (m, b) in cell]
        cell[(m, "average")] = float(np.mean(vals)) if vals else 0.0
    fig, ax = plt.subplots(figsize=(max(6.4, 1.3 * len(groups) + 2), 4.0))
    if not models:
        _empty(ax, "no metrics")
    else:
        width = 0.8 / len(models)
        x = np.arange(len(groups))
        for i, m in enumerate(models):
            ys = [cell.get((m, g), 0.0) for g in groups]
            err = None
            if intervals:
                lows, highs = [], []
                for g, y in zip(groups, ys):
                    lo, hi = (intervals.get((m, g)) or (None, None))
                    lows.append(0.0 if lo is None else max(0.0, y - lo))
                    highs.append(0.0 if hi is None else max(0.0, hi - y))
                err = np.array([lows, highs])
            bars = ax.bar(x + (i - (len(models) - 1) / 2) * width, ys, width, label=m, color=f"C{i}",
                          yerr=err, capsize=2 if err is not None else 0, error_kw={"lw": 0.8})
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
        ax.set_xticks(x, groups, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(f"{_LABELS.get(metric, metric)} (%)")
        top = max([v for v in cell.values()] + [hi for lo, hi in (intervals or {}).values() if hi is not None])
        ax.set_ylim(0, max(5.0, top * 1.2))
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or f"{_LABELS.get(metric, metric)} per benchmark")
    _save(fig, path)
    return {"models": models, "groups": groups,
            "values": {m: [cell.get((m, g), 0.0) for g in groups] for m in models}}

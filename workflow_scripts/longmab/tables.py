"""Benchmark tables built from metrics rows alone (architecture.md: "tables are built from these rows").

Input: metrics rows ``{model, benchmark, n, em, f1, subem}`` with scores in percent (as written by
the eval stage). Output: one row per model, one column group per benchmark, the unweighted average
over benchmarks (the paper's "Avg.") and the change of that average against the base model.
Sets of any size are tabulated (the reference code prints no totals below 50 items).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from statistics import fmean

METRICS = ("subem", "em", "f1")


class TableError(ValueError):
    """Inconsistent metrics rows (a duplicate or missing model x benchmark cell)."""


def benchmark_table(
    rows: Iterable[Mapping],
    base: str = "base",
    models: Sequence[str] | None = None,
    benchmarks: Sequence[str] | None = None,
) -> list[dict]:
    """One dict per model: ``model``, per benchmark ``{b}_{metric}`` and ``{b}_n``, ``avg_{metric}``
    and ``delta_{metric}`` (average minus the base model's average; ``None`` without a base row).

    Parameters
    ----------
    rows : iterable of metrics rows
        Exactly one per (model, benchmark) of the table.
    base : str
        Name of the reference model for the deltas.
    models, benchmarks : sequence of str, optional
        Row / column order; default: order of first appearance (``base`` first if present).

    Raises
    ------
    TableError
        A (model, benchmark) pair appears twice, or a model lacks a benchmark another has.
    """
    cells: dict[tuple[str, str], Mapping] = {}
    seen_models: list[str] = []
    seen_benches: list[str] = []
    for r in rows:
        key = (str(r["model"]), str(r["benchmark"]))
        if key in cells:
            raise TableError(f"two metrics rows for model {key[0]!r} on benchmark {key[1]!r}")
        cells[key] = r
        if key[0] not in seen_models:
            seen_models.append(key[0])
        if key[1] not in seen_benches:
            seen_benches.append(key[1])
    if models is None:
        models = sorted(seen_models, key=lambda m: (m != base, seen_models.index(m)))
    if benchmarks is None:
        benchmarks = seen_benches
    out = []
    for m in models:
        row: dict = {"model": m}
        for b in benchmarks:
            if (m, b) not in cells:
                raise TableError(f"no metrics for model {m!r} on benchmark {b!r}")
            c = cells[(m, b)]
            row[f"{b}_n"] = int(c["n"])
            for k in METRICS:
                row[f"{b}_{k}"] = float(c[k])
        for k in METRICS:
            row[f"avg_{k}"] = fmean(row[f"{b}_{k}"] for b in benchmarks) if benchmarks else 0.0
        out.append(row)
    base_row = next((r for r in out if r["model"] == base), None)
    for row in out:
        for k in METRICS:
            row[f"delta_{k}"] = None if base_row is None else row[f"avg_{k}"] - base_row[f"avg_{k}"]
    return out


def _bench_names(table: Sequence[Mapping]) -> list[str]:
    if not table:
        return []
    return [k[: -len("_n")] for k in table[0] if k.endswith("_n") and k != "model"]


def _num(x, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def to_csv(table: Sequence[Mapping], digits: int = 4) -> str:
    """CSV text: ``model``, then per benchmark ``{b}_n, {b}_subem, {b}_em, {b}_f1``, then
    ``avg_*`` and ``delta_*`` (percent; ``delta_*`` empty without a base row)."""
    benches = _bench_names(table)
    header = ["model"]
    for b in benches:
        header += [f"{b}_n"] + [f"{b}_{k}" for k in METRICS]
    header += [f"avg_{k}" for k in METRICS] + [f"delta_{k}" for k in METRICS]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in table:
        w.writerow([row[h] if h == "model" or h.endswith("_n") else _num(row[h], digits) for h in header])
    return buf.getvalue()


def to_markdown(table: Sequence[Mapping], base: str = "base", digits: int = 1) -> str:
    """A Markdown table of SubEM (percent): a column per benchmark (with its item count), the
    average and its change against ``base``."""
    benches = _bench_names(table)
    header = ["Model"] + [f"{b} (n={table[0][f'{b}_n']})" for b in benches] + ["Avg", f"Δ vs {base}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in table:
        d = row["delta_subem"]
        delta = "" if d is None else ("—" if row["model"] == base else f"{d:+.{digits}f}")
        cells = [row["model"]] + [_num(row[f"{b}_subem"], digits) for b in benches] + [
            _num(row["avg_subem"], digits), delta]
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\nSubEM in percent on the extracted answer (EM and F1 in benchmarks.csv). Avg = unweighted "
            f"mean over the {len(benches)} benchmarks; Δ = Avg minus {base}'s Avg.\n")
    return "\n".join(lines) + "\n" + note


# --------------------------------------------------------------------------------------------------
# The study's tables: main (every model, bootstrap CIs, provenance) and data quality (every run)


def _item_scores(row: Mapping, metric: str) -> dict[str, float]:
    """``id -> score in percent`` from a metrics row's ``items`` block."""
    items = row.get("items")
    if not items:
        raise TableError(f"metrics row of {row.get('model')!r} on {row.get('benchmark')!r} has no per-item "
                         "scores ('items'): re-run its evaluation")
    return {str(i): 100.0 * float(s) for i, s in zip(items["id"], items[metric])}


def paired_bootstrap(
    base: Mapping[str, Mapping[str, float]],
    other: Mapping[str, Mapping[str, float]],
    benchmarks: Sequence[str],
    resamples: int,
    confidence: float,
    rng,
) -> tuple[float, float | None, float | None]:
    """Change of the benchmark-averaged score, ``other - base``, with a paired bootstrap interval.

    Parameters
    ----------
    base, other : mapping benchmark -> mapping item id -> score
        Per-item scores of the two models (same items on each benchmark).
    benchmarks : sequence of str
        The benchmarks averaged (unweighted, as the tables' Avg).
    resamples : int
        Bootstrap resamples (0: no interval).
    confidence : float
        e.g. 0.95 for a 95 % percentile interval.
    rng : numpy.random.Generator
        Seeded generator.

    Returns
    -------
    (float, float or None, float or None)
        The observed change and the interval's bounds. Items are resampled with replacement within
        each benchmark, the same draw for both models (paired), and the per-benchmark mean changes
        are averaged.

    Raises
    ------
    TableError
        When the two models were scored on different items of a benchmark.
    """
    import numpy as np

    diffs = []
    for b in benchmarks:
        if set(base[b]) != set(other[b]):
            raise TableError(f"benchmark {b!r}: the models were scored on different items "
                             f"({len(base[b])} vs {len(other[b])}); evaluate both with the same eval settings")
        ids = sorted(base[b])
        diffs.append(np.array([other[b][i] - base[b][i] for i in ids], dtype=np.float64))
    observed = float(np.mean([d.mean() if d.size else 0.0 for d in diffs])) if diffs else 0.0
    if resamples <= 0 or not diffs or any(d.size == 0 for d in diffs):
        return observed, None, None
    stats = np.zeros(resamples)
    for d in diffs:
        idx = rng.integers(0, d.size, size=(resamples, d.size))
        stats += d[idx].mean(axis=1)
    stats /= len(diffs)
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return observed, float(lo), float(hi)


def bootstrap_mean_ci(scores: Sequence[float], resamples: int, confidence: float, rng) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of a mean (``(None, None)`` without resamples or items)."""
    import numpy as np

    x = np.asarray(list(scores), dtype=np.float64)
    if resamples <= 0 or x.size == 0:
        return None, None
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


PROVENANCE_COLUMNS = ("eval_dir", "model_path", "model_revision", "model_fingerprint", "adapter_path",
                      "adapter_fingerprint", "git_commit", "seed", "settings_sha")


def check_distinct_models(rows: Iterable[Mapping]) -> None:
    """Raise :class:`TableError` when two rows of different names evaluated the same model folder
    content (equal ``provenance.model.fingerprint``, :func:`longmab.provenance.model_fingerprint`):
    one folder evaluated under two names (a wiring fault), or two runs whose training left the weights
    unchanged, would otherwise read as two models with "no effect" in the table."""
    seen: dict[str, str] = {}
    for r in rows:
        model = (r.get("provenance") or {}).get("model") or {}
        fp = model.get("fingerprint")
        name = str(r["model"])
        if not fp:
            continue
        if model.get("chat_template"):  # the same weights asked through another chat template
            fp = f"{fp}+template:{model['chat_template'].get('sha256')}"
        other = seen.setdefault(fp, name)
        if other != name:
            raise TableError(
                f"models {other!r} and {name!r} have the same weights (fingerprint {fp}): one model folder "
                "was evaluated under two names, or a training run left the weights unchanged. Compare the "
                "model and adapter paths in the provenance of their metrics.json files.")


def main_table(
    rows: Iterable[Mapping],
    base: str = "base",
    models: Sequence[str] | None = None,
    benchmarks: Sequence[str] | None = None,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[dict]:
    """:func:`benchmark_table` plus, per model, the SubEM change vs ``base`` with its paired bootstrap
    interval (``delta_subem_lo`` / ``_hi``; ``None`` for the base row or without resamples), a
    bootstrap interval of each benchmark's SubEM (``{b}_subem_lo`` / ``_hi``) and the provenance of
    the numbers (:data:`PROVENANCE_COLUMNS`, from the metrics rows' ``provenance`` block).

    Seeded: the same rows and seed give the same intervals.
    """
    import numpy as np

    rows = list(rows)
    check_distinct_models(rows)
    table = benchmark_table(rows, base=base, models=models, benchmarks=benchmarks)
    if not table:
        return table
    benches = _bench_names(table)
    by_cell = {(str(r["model"]), str(r["benchmark"])): r for r in rows}
    scores = {m["model"]: {b: _item_scores(by_cell[(m["model"], b)], "subem") for b in benches} for m in table}
    for i, row in enumerate(table):
        m = row["model"]
        rng = np.random.default_rng([int(seed), i])
        for b in benches:
            row[f"{b}_subem_lo"], row[f"{b}_subem_hi"] = bootstrap_mean_ci(scores[m][b].values(), resamples,
                                                                           confidence, rng)
        zeros = {b: {k: 0.0 for k in scores[m][b]} for b in benches}  # the Avg's own interval
        _, row["avg_subem_lo"], row["avg_subem_hi"] = paired_bootstrap(
            zeros, scores[m], benches, resamples, confidence, np.random.default_rng([int(seed), i, 1]))
        if m != base and base in scores:
            d, lo, hi = paired_bootstrap(scores[base], scores[m], benches, resamples, confidence, rng)
            row["delta_subem_lo"], row["delta_subem_hi"] = lo, hi
        else:
            row["delta_subem_lo"] = row["delta_subem_hi"] = None
        prov = (by_cell[(m, benches[0])].get("provenance") or {}) if benches else {}
        model = prov.get("model") or {}
        row.update({"eval_dir": f"results/eval/{prov['tag']}" if prov.get("tag") else "",
                    "model_path": model.get("model", ""), "model_revision": model.get("revision") or "",
                    "model_fingerprint": model.get("fingerprint") or "",
                    "adapter_path": (model.get("adapter") or {}).get("model", ""),
                    "adapter_fingerprint": (model.get("adapter") or {}).get("fingerprint") or "",
                    "git_commit": prov.get("git_commit", ""),
                    "seed": prov.get("seed", ""), "settings_sha": prov.get("settings_sha", "")})
    return table


def main_to_csv(table: Sequence[Mapping], digits: int = 4) -> str:
    """CSV of :func:`main_table`: model, per benchmark n / SubEM (+ interval) / EM / F1, averages,
    changes vs base with the SubEM change's interval, then the provenance columns."""
    benches = _bench_names(table)
    header = ["model"]
    for b in benches:
        header += [f"{b}_n", f"{b}_subem", f"{b}_subem_lo", f"{b}_subem_hi", f"{b}_em", f"{b}_f1"]
    header += [f"avg_{k}" for k in METRICS] + ["avg_subem_lo", "avg_subem_hi"]
    header += [f"delta_{k}" for k in METRICS] + ["delta_subem_lo", "delta_subem_hi"]
    header += list(PROVENANCE_COLUMNS)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in table:
        out = []
        for h in header:
            v = row.get(h)
            out.append(v if h == "model" or h.endswith("_n") or h in PROVENANCE_COLUMNS else _num(v, digits))
        w.writerow(out)
    return buf.getvalue()


def main_to_markdown(table: Sequence[Mapping], base: str = "base", digits: int = 1, confidence: float = 0.95) -> str:
    """Markdown: SubEM (percent) per benchmark, the average, and the change vs ``base`` with its
    paired bootstrap interval."""
    benches = _bench_names(table)
    pct = f"{confidence * 100:g} %"
    header = ["Model"] + [f"{b} (n={table[0][f'{b}_n']})" for b in benches] + [f"Avg [{pct} CI]",
                                                                                 f"Δ vs {base} [{pct} CI]"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in table:
        d = row["delta_subem"]
        if d is None:
            delta = ""
        elif row["model"] == base:
            delta = "—"
        else:
            delta = f"{d:+.{digits}f}"
            if row.get("delta_subem_lo") is not None:
                delta += f" [{row['delta_subem_lo']:+.{digits}f}, {row['delta_subem_hi']:+.{digits}f}]"
        avg = _num(row["avg_subem"], digits)
        if row.get("avg_subem_lo") is not None:
            avg += f" [{row['avg_subem_lo']:.{digits}f}, {row['avg_subem_hi']:.{digits}f}]"
        cells = [row["model"]] + [_num(row[f"{b}_subem"], digits) for b in benches] + [avg, delta]
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\nSubEM in percent on the extracted answer (EM, F1 and per-benchmark intervals in main.csv). Avg = "
            f"unweighted mean over the {len(benches)} benchmarks, with a bootstrap {pct} interval over items "
            f"(resampled within each benchmark); Δ = Avg minus {base}'s Avg, with a paired bootstrap "
            f"{pct} interval over items (resampled within each benchmark, same draw for both models). Where each "
            "number came from: the provenance columns of main.csv and main.provenance.json.\n")
    return "\n".join(lines) + "\n" + note


DATA_QUALITY_COLUMNS = (
    ("run", "run"), ("method", "method"), ("samples_in", "samples in"), ("probes_kept", "probes kept"),
    ("pairs", "pairs"), ("ties", "ties"), ("chosen_reward", "chosen reward"), ("rejected_reward", "rejected reward"),
    ("reward_gap", "gap"), ("distinct_responses", "distinct / sample"), ("chunks", "chunks / sample"),
    ("evidence_all", "evidence all"), ("evidence_all_lo", "all lo"), ("evidence_all_hi", "all hi"),
    ("evidence_chance", "all by chance"), ("evidence_any", "evidence any"), ("evidence_round1", "evidence round 1"),
    ("generations", "generations"),
    ("engine_seconds", "engine s"),
)


def data_quality_table(stats_by_run: Mapping[str, Mapping]) -> list[dict]:
    """One row per run from its pairs ``stats.json``: samples in, probes kept, pairs, ties, mean chosen
    and rejected strict reward and their gap, distinct responses per sample, evidence coverage of the
    rollout rounds (all / any / round 1; ``None`` without evidence annotations or for SeaLong),
    generations and the engine seconds of the rollout (or SeaLong sampling)."""
    out = []
    for run, s in stats_by_run.items():
        ev = s.get("evidence_hit_rate") or {}
        chosen, rejected = s.get("mean_chosen_reward"), s.get("mean_rejected_reward")
        out.append({
            "run": run, "method": s.get("method", "longmab"), "samples_in": s.get("samples_in"),
            "probes_kept": s.get("probes_kept"), "pairs": s.get("pairs"), "ties": s.get("ties_skipped"),
            "chosen_reward": chosen, "rejected_reward": rejected,
            "reward_gap": None if chosen is None or rejected is None or not s.get("pairs") else chosen - rejected,
            "distinct_responses": s.get("mean_distinct_responses"), "chunks": ev.get("chunks"),
            "evidence_all": ev.get("all"),
            "evidence_all_lo": (ev.get("all_ci") or [None, None])[0],
            "evidence_all_hi": (ev.get("all_ci") or [None, None])[1],
            "evidence_chance": ev.get("chance_all"),
            "evidence_any": ev.get("any"), "evidence_round1": ev.get("round1_all"),
            "generations": s.get("generations"), "engine_seconds": s.get("engine_seconds"),
        })
    return out


def _cell(v, digits: int) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def data_quality_to_csv(table: Sequence[Mapping], digits: int = 4) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([k for k, _ in DATA_QUALITY_COLUMNS])
    for row in table:
        w.writerow([_cell(row[k], digits) for k, _ in DATA_QUALITY_COLUMNS])
    return buf.getvalue()


def data_quality_to_markdown(table: Sequence[Mapping], digits: int = 2) -> str:
    header = [label for _, label in DATA_QUALITY_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|"]
    for row in table:
        lines.append("| " + " | ".join(_cell(row[k], digits) if row[k] is not None else "–"
                                       for k, _ in DATA_QUALITY_COLUMNS) + " |")
    note = ("\nRewards are the strict reward of the pair stage ((SubEM + F1 of the extracted answer) / 2; for SeaLong "
            "only logged, its pairs are chosen by MBR). Evidence = share of rollout rounds whose chunks covered all / "
            "any supporting passage (– without annotations or rollouts); all lo / hi = its 95 % bootstrap interval over "
            "samples; all by chance = the share expected of the same number of chunks drawn at random each round "
            "(exact per sample): a strategy that concentrates on the informative chunks lies above it. "
            "engine s = seconds inside the generation "
            "engine for the rollout (SeaLong: its sampling).\n")
    return "\n".join(lines) + "\n" + note

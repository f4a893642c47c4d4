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

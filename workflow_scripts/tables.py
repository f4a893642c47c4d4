"""Rule `tables`: the study's main and data-quality tables (CSV + Markdown) from metrics rows and
pair statistics alone (thin adapter)."""
from longmab.io import read_json, write_json, write_text
from longmab.logs import setup_logging
from longmab.tables import (
    data_quality_table,
    data_quality_to_csv,
    data_quality_to_markdown,
    main_table,
    main_to_csv,
    main_to_markdown,
)


def main(smk):
    log = setup_logging(smk.log[0])
    p = smk.params
    rows = [read_json(path) for path in smk.input.metrics]
    table = main_table(rows, base="base", models=list(p.models), benchmarks=list(p.benchmarks),
                       resamples=p.resamples, confidence=p.confidence, seed=p.seed)
    write_text(smk.output.main, main_to_csv(table))
    write_text(smk.output.main_md, main_to_markdown(table, confidence=p.confidence))
    provenance = {}
    for r in rows:
        provenance.setdefault(r["model"], r.get("provenance"))
    write_json(smk.output.provenance, provenance)
    stats = {run: read_json(path) for run, path in zip(p.runs, smk.input.stats)}
    quality = data_quality_table(stats)
    write_text(smk.output.quality, data_quality_to_csv(quality))
    write_text(smk.output.quality_md, data_quality_to_markdown(quality))
    log.info("tables: %d models x %d benchmarks; data quality of %d runs", len(table), len(p.benchmarks), len(quality))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

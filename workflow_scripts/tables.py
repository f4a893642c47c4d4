"""Rule `tables`: benchmarks.csv + benchmarks.md from the metrics files alone (thin adapter)."""
from longmab.io import read_json, write_text
from longmab.logs import setup_logging
from longmab.tables import benchmark_table, to_csv, to_markdown


def main(smk):
    log = setup_logging(smk.log[0])
    rows = [read_json(path) for path in smk.input]
    table = benchmark_table(rows, base="base", models=list(smk.params.models), benchmarks=list(smk.params.benchmarks))
    write_text(smk.output.csv, to_csv(table))
    write_text(smk.output.md, to_markdown(table))
    log.info("tables: %d models x %d benchmarks", len(table), len(smk.params.benchmarks))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

"""Rule `run_manifest`: the study's runs and the folders of their outputs (thin adapter)."""
from longmab.io import write_json
from longmab.logs import setup_logging


def main(smk):
    log = setup_logging(smk.log[0])
    write_json(smk.output[0], smk.params.manifest)
    log.info("runs: %s", ", ".join(smk.params.manifest["runs"]))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

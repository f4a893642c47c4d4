"""Rule `dpo_export`: `llamafactory-cli export` (merge) into a temporary folder, moved into place."""
from longmab.dpo import export
from longmab.logs import setup_logging


def main(smk):
    log = setup_logging(smk.log.main)
    export(smk.input.yaml, smk.output[0], smk.log.llamafactory)
    log.info("merged model in %s", smk.output[0])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

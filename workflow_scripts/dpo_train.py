"""Rule `dpo_train`: `llamafactory-cli train` into a temporary folder, moved into place (thin adapter)."""
from longmab.dpo import train
from longmab.logs import setup_logging


def main(smk):
    log = setup_logging(smk.log.main)
    overrides = train(smk.input.yaml, smk.output.adapter, smk.output.trainer_log, smk.log.llamafactory,
                      effective_batch_size=smk.params.effective_batch_size)
    log.info("DPO adapter in %s (command-line overrides: %s)", smk.output.adapter, overrides or "none")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

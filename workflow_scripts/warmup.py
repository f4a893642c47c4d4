"""Rule `embedded_warmup`: the embedded policy's format warm-up (thin adapter)."""
from longmab.logs import setup_logging
from longmab.warmup import WarmupSettings, train_warmup


def main(smk):
    setup_logging(smk.log[0])
    # the job's threads: not a setting (they never rename the folder)
    settings = WarmupSettings.from_dict({**smk.params.warmup, "threads": smk.threads})
    train_warmup(smk.input[0], smk.output[0], settings)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

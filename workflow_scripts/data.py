"""Rule `data`: validate the raw training file and split it into shards (thin adapter)."""
from longmab.logs import setup_logging
from longmab.stages.data import prepare_shards


def main(smk):
    log = setup_logging(smk.log[0])
    manifest = prepare_shards(smk.input[0], list(smk.output.shards), smk.output.manifest, smk.params.max_samples)
    log.info("data: %d samples in %d shards", manifest["samples_used"], len(manifest["shards"]))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

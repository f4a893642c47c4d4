"""Rule `embedded_policy`: build the dense HF folder of the embedded SmolLM2 (thin adapter)."""
from longmab.logs import setup_logging
from longmab.models import build_embedded_policy


def main(smk):
    setup_logging(smk.log[0])
    build_embedded_policy(smk.output[0], dtype=smk.params.dtype)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

"""Rule `merge_adapter`: an external row's LoRA adapter merged into its model (thin adapter)."""
from longmab.hub import resolve_local
from longmab.logs import setup_logging
from longmab.models import merge_lora


def main(smk):
    log = setup_logging(smk.log[0])
    p = smk.params
    base = resolve_local(str(smk.input.model[0])) if smk.input.get("model") else p.model
    merge_lora(base, p.adapter, smk.output[0])
    log.info("merged %s into %s -> %s", p.adapter, base, smk.output[0])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

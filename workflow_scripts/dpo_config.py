"""Rules `dpo_config` / `dpo_export_config`: write a LLaMA-Factory yaml file (thin adapter)."""
from longmab.dpo import export_args, train_args, write_yaml
from longmab.hub import resolve_local
from longmab.logs import setup_logging


def main(smk):
    log = setup_logging(smk.log[0])
    p = smk.params
    # the built embedded folder, the local snapshot a download record names, or a local folder
    model = resolve_local(str(smk.input.model[0])) if smk.input.get("model") else p.model
    if p.kind == "train":
        args = train_args(p.dpo, model=model, dataset=p.dataset, dataset_dir=p.dataset_dir,
                          template=p.template, output_dir=p.output_dir, seed=p.seed)
        header = (f"# DPO of {', '.join(p.runs)} ({smk.wildcards.tag}; written by the pipeline from the config's dpo section).\n"
                  f"# By hand: llamafactory-cli train {smk.output[0]}\n")
    else:
        args = export_args(model=model, adapter_dir=p.adapter_dir, template=p.template,
                           finetuning_type=p.finetuning_type, export_dir=p.export_dir)
        header = (f"# Merge the DPO adapter of {', '.join(p.runs)} ({smk.wildcards.tag}) into the policy (written by the pipeline).\n"
                  f"# By hand: llamafactory-cli export {smk.output[0]}\n")
    write_yaml(smk.output[0], args, header)
    log.info("wrote %s (%d arguments)", smk.output[0], len(args))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

"""Rules `dpo_config` / `dpo_export_config`: write a LLaMA-Factory yaml file (thin adapter)."""
from longmab.dpo import export_args, template_parity, train_args, write_yaml
from longmab.hub import resolve_local
from longmab.logs import setup_logging


def check_template(log, model, template, default_system):
    """Warn when DPO would train on prompts rendered unlike the ones the engines send."""
    try:
        parity = template_parity(model, template, default_system)
    except OSError as exc:  # a hub id not downloaded here (the training job resolves it)
        log.info("template parity not checked (%s)", exc)
        return
    if parity["match"]:
        log.info("template %r renders prompts exactly as the model's chat template", template)
    else:
        log.warning("LLaMA-Factory template %r (default_system %r) renders prompts unlike the model's own "
                    "chat template, which the probe, rollout and evaluation engines use: DPO trains on "
                    "prompts the evaluation never sends. Set models.template / models.default_system.\n"
                    "  LLaMA-Factory: %r\n  tokenizer:     %r",
                    template, default_system, parity["llamafactory"], parity["tokenizer"])


def main(smk):
    log = setup_logging(smk.log[0])
    p = smk.params
    # the built embedded folder, the local snapshot a download record names, or a local folder
    model = resolve_local(str(smk.input.model[0])) if smk.input.get("model") else p.model
    if p.kind == "train":
        args = train_args(p.dpo, model=model, dataset=p.dataset, dataset_dir=p.dataset_dir,
                          template=p.template, output_dir=p.output_dir, seed=p.seed,
                          default_system=p.default_system)
        check_template(log, model, p.template, p.default_system)
        header = (f"# DPO of {', '.join(p.runs)} ({smk.wildcards.tag}; written by the pipeline from the config's dpo section).\n"
                  f"# By hand: llamafactory-cli train {smk.output[0]}\n")
    else:
        args = export_args(model=model, adapter_dir=p.adapter_dir, template=p.template,
                           finetuning_type=p.finetuning_type, export_dir=p.export_dir,
                           default_system=p.default_system)
        header = (f"# Merge the DPO adapter of {', '.join(p.runs)} ({smk.wildcards.tag}) into the policy (written by the pipeline).\n"
                  f"# By hand: llamafactory-cli export {smk.output[0]}\n")
    write_yaml(smk.output[0], args, header)
    log.info("wrote %s (%d arguments)", smk.output[0], len(args))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

localrules:
    dpo_config,
    dpo_export_config,


rule dpo_config:
    """Method §7: a run's LLaMA-Factory DPO training arguments, written as a yaml file
    (re-run by hand with `llamafactory-cli train results/dpo/<tag>/train.yaml`)."""
    input:
        model=policy_input(),
    output:
        "results/dpo/{tag}/train.yaml",
    log:
        "results/logs/dpo/{tag}.config.log",
    conda:
        "../envs/llamafactory.yaml"
    params:
        kind="train",
        dpo=P("dpo", "dpo"),
        model=config["models"]["policy"],  # a local folder; else the input names it
        template=P("dpo", "template"),
        default_system=P("dpo", "default_system"),
        dataset=lambda wc: f"longmab_{det('dpo', wc)['pairs']}",
        dataset_dir=lambda wc: f"results/pairs/{det('dpo', wc)['pairs']}",
        output_dir=lambda wc: f"results/dpo/{wc.tag}/adapter",
        seed=P("dpo", "seed"),
        runs=lambda wc: PLAN.runs_of("dpo", wc.tag),
    script:
        "../workflow_scripts/dpo_config.py"


rule dpo_train:
    """Method §7: DPO (LoRA) on a run's preference pairs with `llamafactory-cli train`. Trains
    into a temporary folder renamed into place at the end; keeps LLaMA-Factory's loss log. The
    folder is named by everything that determines the adapter (pairs, dpo settings, policy, seed,
    the training code), so no config or code change ever replaces a trained adapter."""
    input:
        yaml="results/dpo/{tag}/train.yaml",
        pairs=lambda wc: f"results/pairs/{det('dpo', wc)['pairs']}/pairs.jsonl",
        dataset_info=lambda wc: f"results/pairs/{det('dpo', wc)['pairs']}/dataset_info.json",
        model=policy_input(),
        deepspeed=deepspeed_input,
    output:
        adapter=protected(directory("results/dpo/{tag}/adapter")),
        trainer_log="results/dpo/{tag}/trainer_log.jsonl",
    log:
        main="results/logs/dpo/{tag}.train.log",
        llamafactory="results/logs/dpo/{tag}.train.llamafactory.log",
    benchmark:
        "results/benchmarks/dpo/{tag}.train.tsv"
    priority: PREFERENCE_PRIORITY
    conda:
        "../envs/llamafactory.yaml"
    resources:
        gpu=1,
    params:
        # part of the folder's name too (det: dpo): never changes without a new folder
        effective_batch_size=P("dpo", "dpo", "effective_batch_size"),
    script:
        "../workflow_scripts/dpo_train.py"


rule dpo_export_config:
    """The `llamafactory-cli export` arguments: merge the adapter into the policy on CPU."""
    input:
        model=policy_input(),
    output:
        "results/dpo/{tag}/export.yaml",
    log:
        "results/logs/dpo/{tag}.export_config.log",
    conda:
        "../envs/llamafactory.yaml"
    params:
        kind="export",
        model=config["models"]["policy"],  # a local folder; else the input names it
        template=P("dpo", "template"),
        default_system=P("dpo", "default_system"),
        finetuning_type=P("dpo", "dpo", "finetuning_type"),
        adapter_dir=lambda wc: f"results/dpo/{wc.tag}/adapter",
        export_dir=lambda wc: f"results/dpo/{wc.tag}/merged",
        runs=lambda wc: PLAN.runs_of("dpo", wc.tag),
    script:
        "../workflow_scripts/dpo_config.py"


rule dpo_export:
    """Merge the LoRA adapter into the policy (`llamafactory-cli export`) for evaluation."""
    input:
        yaml="results/dpo/{tag}/export.yaml",
        adapter="results/dpo/{tag}/adapter",
        model=policy_input(),
    output:
        protected(directory("results/dpo/{tag}/merged")),
    log:
        main="results/logs/dpo/{tag}.export.log",
        llamafactory="results/logs/dpo/{tag}.export.llamafactory.log",
    benchmark:
        "results/benchmarks/dpo/{tag}.export.tsv"
    priority: PREFERENCE_PRIORITY
    conda:
        "../envs/llamafactory.yaml"
    script:
        "../workflow_scripts/dpo_export.py"

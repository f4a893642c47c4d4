localrules:
    dpo_config,
    dpo_export_config,


rule dpo_config:
    """Method §7: this run's LLaMA-Factory DPO training arguments, written as a yaml file
    (re-run by hand with `llamafactory-cli train results/dpo/<run>/train.yaml`)."""
    output:
        "results/dpo/{run}/train.yaml",
    params:
        kind="train",
        dpo=config["dpo"],
        model=policy_path(),
        template=config["models"]["template"],
        dataset=lambda wc: f"longmab_{wc.run}",
        dataset_dir=lambda wc: f"results/pairs/{wc.run}",
        output_dir=lambda wc: f"results/dpo/{wc.run}/adapter",
        seed=config["seed"],
    log:
        "results/logs/dpo/{run}.config.log",
    conda:
        "../envs/llamafactory.yaml"
    script:
        "../workflow_scripts/dpo_config.py"


rule dpo_train:
    """Method §7: DPO (LoRA) on this run's preference pairs with `llamafactory-cli train`. Trains
    into a temporary folder renamed into place at the end; keeps LLaMA-Factory's loss log."""
    input:
        yaml="results/dpo/{run}/train.yaml",
        pairs="results/pairs/{run}/pairs.jsonl",
        dataset_info="results/pairs/{run}/dataset_info.json",
        model=policy_input(),
        deepspeed=deepspeed_input(),
    output:
        adapter=protected(directory("results/dpo/{run}/adapter")),
        trainer_log="results/dpo/{run}/trainer_log.jsonl",
    resources:
        gpu=1,
    log:
        main="results/logs/dpo/{run}.train.log",
        llamafactory="results/logs/dpo/{run}.train.llamafactory.log",
    benchmark:
        "results/benchmarks/dpo/{run}.train.tsv"
    conda:
        "../envs/llamafactory.yaml"
    script:
        "../workflow_scripts/dpo_train.py"


rule dpo_export_config:
    """The `llamafactory-cli export` arguments: merge the adapter into the policy on CPU."""
    output:
        "results/dpo/{run}/export.yaml",
    params:
        kind="export",
        model=policy_path(),
        template=config["models"]["template"],
        finetuning_type=config["dpo"]["finetuning_type"],
        adapter_dir=lambda wc: f"results/dpo/{wc.run}/adapter",
        export_dir=lambda wc: f"results/dpo/{wc.run}/merged",
    log:
        "results/logs/dpo/{run}.export_config.log",
    conda:
        "../envs/llamafactory.yaml"
    script:
        "../workflow_scripts/dpo_config.py"


rule dpo_export:
    """Merge the LoRA adapter into the policy (`llamafactory-cli export`) for evaluation."""
    input:
        yaml="results/dpo/{run}/export.yaml",
        adapter="results/dpo/{run}/adapter",
        model=policy_input(),
    output:
        protected(directory("results/dpo/{run}/merged")),
    log:
        main="results/logs/dpo/{run}.export.log",
        llamafactory="results/logs/dpo/{run}.export.llamafactory.log",
    benchmark:
        "results/benchmarks/dpo/{run}.export.tsv"
    conda:
        "../envs/llamafactory.yaml"
    script:
        "../workflow_scripts/dpo_export.py"

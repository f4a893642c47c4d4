rule pairs:
    """Method §6: best vs worst response per sample -> DPO pairs (LLaMA-Factory dataset)."""
    input:
        rollouts=expand("results/rollout/{shard}.jsonl", shard=SHARDS),
        probe_stats=expand("results/probe/{shard}.stats.json", shard=SHARDS),
        manifest="results/data/manifest.json",
        model=policy_input(),
    output:
        pairs="results/pairs/{run}/pairs.jsonl",
        dataset_info="results/pairs/{run}/dataset_info.json",
        stats="results/pairs/{run}/stats.json",
    params:
        policy=config["models"]["policy"],
        max_prompt_length=config["pairs"]["max_prompt_length"],
        reserve_tokens=config["pairs"]["reserve_tokens"],
        subem=config["reward"]["subem"],
        prompts=config["prompts"],
        seed=config["seed"],
    log:
        "results/logs/pairs/{run}.log",
    conda:
        "../envs/base.yaml"
    script:
        "../workflow_scripts/pairs.py"

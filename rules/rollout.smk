rule rollout:
    """Method §4: UCB over chunks for R rounds (or an ablation strategy); each round one engine call for the
    whole shard."""
    input:
        arms="results/embed/{shard}.jsonl",
        model=policy_input(),
    output:
        "results/rollout/{shard}.jsonl",
    params:
        engine=engine_params(),
        sampling=config["sampling"],
        rounds=config["rollout"]["rounds"],
        top_k=config["rollout"]["top_k"],
        strategy=config["rollout"]["strategy"],
        subem=config["reward"]["subem"],
        prompts=config["prompts"],
        seed=config["seed"],
    resources:
        gpu=1,
    log:
        "results/logs/rollout/{shard}.log",
    benchmark:
        "results/benchmarks/rollout/{shard}.tsv"
    conda:
        "../envs/vllm.yaml"
    script:
        "../workflow_scripts/rollout.py"

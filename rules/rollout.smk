rule rollout:
    """Method §4: UCB over chunks for R rounds (or an ablation strategy); each round one engine
    call for the whole shard."""
    input:
        arms=lambda wc: f"results/embed/{det('rollout', wc)['embed']}/{wc.shard}.jsonl",
        model=policy_input(),
    output:
        "results/rollout/{tag}/{shard}.jsonl",
    log:
        "results/logs/rollout/{tag}/{shard}.log",
    benchmark:
        "results/benchmarks/rollout/{tag}/{shard}.tsv"
    conda:
        "../envs/vllm.yaml"
    resources:
        gpu=1,
    params:
        engine=engine_param("rollout"),
        sampling=P("rollout", "sampling"),
        rounds=P("rollout", "rounds"),
        top_k=P("rollout", "top_k"),
        strategy=P("rollout", "strategy"),
        subem=P("rollout", "subem"),
        prompts=config["prompts"],
        seed=P("rollout", "seed"),
        code=CODE["rollout"],
    script:
        "../workflow_scripts/rollout.py"

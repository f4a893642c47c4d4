rule rollout:
    """Method §4: UCB over chunks for R rounds (or an ablation strategy); each round one engine
    call for the whole shard."""
    input:
        # every embed shard of the run: each job takes its balanced part (assign_shards, by kept
        # samples after the probe filter), so no shard waits on another's share of the kept samples
        arms=lambda wc: [
            f"results/embed/{det('rollout', wc)['embed']}/{s}.jsonl" for s in SHARDS
        ],
        model=policy_input(),
    output:
        rows="results/rollout/{tag}/{shard}.jsonl",
        stats="results/rollout/{tag}/{shard}.stats.json",
    log:
        "results/logs/rollout/{tag}/{shard}.log",
    benchmark:
        "results/benchmarks/rollout/{tag}/{shard}.tsv"
    priority: PREFERENCE_PRIORITY
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
        early_stop=P("rollout", "early_stop"),
        shard=lambda wc: int(wc.shard),
        shards=len(SHARDS),
        code=CODE["rollout"],
    script:
        "../workflow_scripts/rollout.py"

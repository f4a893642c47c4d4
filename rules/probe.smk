rule probe:
    """Method §1-2: chunk each context; the policy writes a chain of thought given the gold answer;
    keep the sample only if its final answer matches (drops counted with reasons in stats).
    """
    input:
        shard=data_shard("probe"),
        model=policy_input(),
    output:
        probes="results/probe/{tag}/{shard}.jsonl",
        stats="results/probe/{tag}/{shard}.stats.json",
    log:
        "results/logs/probe/{tag}/{shard}.log",
    benchmark:
        "results/benchmarks/probe/{tag}/{shard}.tsv"
    priority: PREFERENCE_PRIORITY
    conda:
        "../envs/vllm.yaml"
    resources:
        gpu=1,
    params:
        engine=engine_param("probe"),
        sampling=P("probe", "sampling"),
        chunking=P("probe", "chunking"),
        prompts=config["prompts"],
        subem=P("probe", "subem"),
        seed=P("probe", "seed"),
        code=CODE["probe"],
    script:
        "../workflow_scripts/probe.py"

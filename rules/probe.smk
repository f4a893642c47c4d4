rule probe:
    """Method §1-2: chunk each context; the policy writes a chain of thought given the gold answer;
    keep the sample only if its final answer matches (drops counted with reasons in stats)."""
    input:
        shard="results/data/shards/{shard}.jsonl",
        model=policy_input(),
    output:
        probes="results/probe/{shard}.jsonl",
        stats="results/probe/{shard}.stats.json",
    params:
        engine=engine_params(),
        sampling=config["sampling"],
        chunking=config["chunking"],
        prompts=config["prompts"],
        seed=config["seed"],
    resources:
        gpu=1,
    log:
        "results/logs/probe/{shard}.log",
    benchmark:
        "results/benchmarks/probe/{shard}.tsv"
    conda:
        "../envs/vllm.yaml"
    script:
        "../workflow_scripts/probe.py"

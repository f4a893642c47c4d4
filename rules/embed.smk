rule embed:
    """Method §3: initial arm values (probe_similarity, query_similarity or seeded random)."""
    input:
        probes="results/probe/{shard}.jsonl",
    output:
        "results/embed/{shard}.jsonl",
    params:
        method=config["init"]["method"],
        embedder=config["models"]["embedder"],
        prefix=config["models"]["embedder_query_prefix"],
        trust_remote_code=config["models"]["trust_remote_code"],
        seed=config["seed"],
    log:
        "results/logs/embed/{shard}.log",
    benchmark:
        "results/benchmarks/embed/{shard}.tsv"
    conda:
        "../envs/embed.yaml"
    script:
        "../workflow_scripts/embed.py"

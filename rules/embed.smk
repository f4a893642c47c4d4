rule embed:
    """Method §3: initial arm values (probe_similarity, query_similarity or seeded random)."""
    input:
        probes=lambda wc: f"results/probe/{det('embed', wc)['probe']}/{wc.shard}.jsonl",
        embedder=embedder_input("embed"),
    output:
        "results/embed/{tag}/{shard}.jsonl",
    log:
        "results/logs/embed/{tag}/{shard}.log",
    benchmark:
        "results/benchmarks/embed/{tag}/{shard}.tsv"
    priority: PREFERENCE_PRIORITY
    conda:
        "../envs/embed.yaml"
    resources:
        gpu=1,
    params:
        method=P("embed", "method"),
        embedder=P("embed", "embedder"),
        prefix=P("embed", "prefix", default=""),
        trust_remote_code=config["models"]["trust_remote_code"],
        seed=P("embed", "seed", default=config["seed"]),
        code=CODE["embed"],
    script:
        "../workflow_scripts/embed.py"

rule sealong:
    """SeaLong baseline (method.md §10): N samples per question over the full context, with the
    plan-and-solve instruction; one engine call per shard."""
    input:
        shard=data_shard("sealong"),
        model=policy_input(),
    output:
        samples="results/sealong/{tag}/{shard}.jsonl",
        stats="results/sealong/{tag}/{shard}.stats.json",
    log:
        "results/logs/sealong/{tag}/{shard}.log",
    benchmark:
        "results/benchmarks/sealong/{tag}/{shard}.tsv"
    priority: PREFERENCE_PRIORITY
    conda:
        "../envs/vllm.yaml"
    resources:
        gpu=1,
    params:
        engine=engine_param("sealong"),
        sampling=P("sealong", "sampling"),
        instruction=lambda wc: run_config("sealong")(wc)["pairs"]["sealong"][
            "instruction"
        ],
        prompt_mode=lambda wc: run_config("sealong")(wc)["pairs"]["sealong"]["prompt"],
        prompts=config["prompts"],
        seed=P("sealong", "seed"),
        code=CODE["sealong"],
    script:
        "../workflow_scripts/sealong.py"


rule mbr:
    """SeaLong: embed every whole sampled output (no query prefix; pairs.sealong.mbr_* settings);
    MBR score = mean cosine similarity to the others."""
    input:
        samples=lambda wc: f"results/sealong/{det('mbr', wc)['sealong']}/{wc.shard}.jsonl",
        embedder=mbr_embedder_input,
    output:
        "results/mbr/{tag}/{shard}.jsonl",
    log:
        "results/logs/mbr/{tag}/{shard}.log",
    benchmark:
        "results/benchmarks/mbr/{tag}/{shard}.tsv"
    priority: PREFERENCE_PRIORITY
    conda:
        "../envs/embed.yaml"
    resources:
        gpu=1,
    params:
        embedder=P("mbr", "embedder"),
        max_seq_length=P("mbr", "max_seq_length"),
        min_seq_length=P("mbr", "min_seq_length"),
        encode_kwargs=P("mbr", "encode_kwargs", default={}),
        trust_remote_code=config["models"]["trust_remote_code"],
        code=CODE["mbr"],
    script:
        "../workflow_scripts/mbr.py"

rule data:
    """Validate the raw training JSONL (PATH:LINE errors) and split it into shards."""
    input:
        config["data"]["train"],
    output:
        shards=expand("results/data/shards/{shard}.jsonl", shard=SHARDS),
        manifest="results/data/manifest.json",
    params:
        max_samples=config["data"]["max_samples"],
    log:
        "results/logs/data.log",
    conda:
        "../envs/base.yaml"
    script:
        "../workflow_scripts/data.py"

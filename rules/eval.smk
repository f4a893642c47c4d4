rule eval:
    """Method §8: one job per model (the base policy once per policy and benchmark settings, each
    run's merged DPO model or, with eval.adapters, its adapter on the policy's engine, each external
    row of eval.models) answers every benchmark from its full context (middle-truncated to
    max_input_len), greedy, with one engine load; EM / F1 / SubEM per item and per set (percent),
    with the provenance of the numbers in every metrics file."""
    input:
        benchmarks=[b["path"] for b in config["eval"]["benchmarks"].values()],
        model=eval_model_input,
        adapter=eval_adapter_input,
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
        revision=eval_revision,
        adapter=eval_adapter,
        serve_adapter=eval_served_adapter,
        chat_template=lambda wc: (
            det("eval", wc)["model"].get("chat_template") or {}
        ).get("path"),
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


rule merge_adapter:
    """An external evaluation row's LoRA adapter (eval.models[].adapter) merged into its model
    with PEFT, written atomically; the eval job then loads it like any model folder."""
    input:
        model=lambda wc: external_model_input(det("eval", wc)["model"]["name"]),
    output:
        directory("results/models/external/{tag}"),
    log:
        "results/logs/merge_adapter/{tag}.log",
    conda:
        "../envs/llamafactory.yaml"
    params:
        model=lambda wc: det("eval", wc)["model"]["model"],
        adapter=lambda wc: det("eval", wc)["model"]["adapter"],
    script:
        "../workflow_scripts/merge_adapter.py"

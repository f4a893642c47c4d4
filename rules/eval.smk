rule eval:
    """Method §8: one job per model ("base" = the configured policy, <run> = the merged DPO model)
    answers every benchmark from its full context (middle-truncated to max_input_len), greedy, with
    one engine load; EM / F1 / SubEM per item and per set (percent)."""
    input:
        benchmarks=[b["path"] for b in config["eval"]["benchmarks"].values()],
        model=eval_model_input,
    output:
        preds=expand("results/eval/{{model}}/{bench}/preds.jsonl", bench=BENCHMARKS),
        metrics=expand("results/eval/{{model}}/{bench}/metrics.json", bench=BENCHMARKS),
    params:
        model=eval_model_path,
        engine=engine_params(config["eval"]["backend"]),
        benchmarks=config["eval"]["benchmarks"],
        max_samples=config["eval"]["max_samples"],
        max_input_len=config["eval"]["max_input_len"],
        max_tokens=config["eval"]["max_tokens"],
        temperature=config["eval"]["temperature"],
        prompts=config["prompts"],
        seed=config["seed"],
    resources:
        gpu=1,
    log:
        "results/logs/eval/{model}.log",
    benchmark:
        "results/benchmarks/eval/{model}.tsv"
    conda:
        "../envs/vllm.yaml"
    script:
        "../workflow_scripts/evaluate.py"

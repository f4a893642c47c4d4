rule pairs:
    """Method §6: best vs worst response per sample -> DPO pairs (LLaMA-Factory dataset); or, for
    pairs.method sealong, highest vs a lower-half MBR score (method.md §10); or, with
    pairs.from_file, a ready-made preference file validated and converted."""
    input:
        unpack(pairs_inputs),
    output:
        pairs="results/pairs/{tag}/pairs.jsonl",
        dataset_info="results/pairs/{tag}/dataset_info.json",
        stats="results/pairs/{tag}/stats.json",
    log:
        "results/logs/pairs/{tag}.log",
    priority: PREFERENCE_PRIORITY
    conda:
        "../envs/base.yaml"
    params:
        method=P("pairs", "method"),
        policy=P("pairs", "policy"),
        max_prompt_length=P("pairs", "max_prompt_length"),
        reserve_tokens=P("pairs", "reserve_tokens"),
        subem=P("pairs", "subem"),
        instruction=lambda wc: run_config("pairs")(wc)["pairs"]["sealong"][
            "instruction"
        ],
        prompt_mode=lambda wc: run_config("pairs")(wc)["pairs"]["sealong"]["prompt"],
        prompts=config["prompts"],
        seed=P("pairs", "seed"),
        truncate=P("pairs", "truncate", default=False),
        runs=lambda wc: PLAN.runs_of("pairs", wc.tag),
        code=CODE["pairs"],
    script:
        "../workflow_scripts/pairs.py"

localrules:
    tables,
    plot_rollout,
    plot_dpo_loss,
    plot_benchmarks,


rule tables:
    """Benchmark table: a row per model, a column per benchmark (SubEM; EM and F1 in the CSV),
    the average and its change against base; built from the metrics files alone."""
    input:
        eval_metrics(),
    output:
        csv=report(
            "results/tables/benchmarks.csv",
            caption="../report/benchmarks.rst",
            category="Benchmarks",
            labels={"name": "SubEM / EM / F1 per benchmark"},
        ),
        md="results/tables/benchmarks.md",
    params:
        models=EVAL_MODELS,
        benchmarks=BENCHMARKS,
    log:
        "results/logs/tables.log",
    conda:
        "../envs/base.yaml"
    script:
        "../workflow_scripts/tables.py"


rule plot_rollout:
    """Rollout figures: mean reward per UCB round; arm values over rounds with evidence chunks marked."""
    input:
        expand("results/rollout/{shard}.jsonl", shard=SHARDS),
    output:
        reward=report(
            "results/plots/rollout_reward.png",
            caption="../report/rollout_reward.rst",
            category="Rollout",
            labels={"name": "mean reward per round"},
        ),
        arms=report(
            "results/plots/arm_values.png",
            caption="../report/arm_values.rst",
            category="Rollout",
            labels={"name": "arm values over rounds"},
        ),
    params:
        n_samples=3,
    log:
        "results/logs/plots/rollout.log",
    conda:
        "../envs/base.yaml"
    script:
        "../workflow_scripts/plots.py"


rule plot_dpo_loss:
    """DPO training loss per step, from LLaMA-Factory's trainer log."""
    input:
        f"results/dpo/{RUN}/trainer_log.jsonl",
    output:
        report(
            "results/plots/dpo_loss.png",
            caption="../report/dpo_loss.rst",
            category="DPO",
            labels={"name": "training loss"},
        ),
    params:
        run=RUN,
    log:
        "results/logs/plots/dpo_loss.log",
    conda:
        "../envs/base.yaml"
    script:
        "../workflow_scripts/plots.py"


rule plot_benchmarks:
    """Base vs trained SubEM bars per benchmark."""
    input:
        eval_metrics(),
    output:
        report(
            "results/plots/benchmarks_subem.png",
            caption="../report/benchmarks_subem.rst",
            category="Benchmarks",
            labels={"name": "SubEM per benchmark"},
        ),
    log:
        "results/logs/plots/benchmarks.log",
    conda:
        "../envs/base.yaml"
    script:
        "../workflow_scripts/plots.py"

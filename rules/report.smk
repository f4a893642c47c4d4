localrules:
    run_manifest,
    tables,
    plot_rollout,
    plot_dpo_loss,
    plot_benchmarks,


rule run_manifest:
    """The study's runs -> the folders of their outputs, and every folder's settings
    (results/runs/{study}.json): where a number in a table came from."""
    output:
        f"results/runs/{STUDY}.json",
    log:
        f"results/logs/runs/{STUDY}.log",
    conda:
        "../envs/base.yaml"
    params:
        manifest=PLAN.manifest(),
    script:
        "../workflow_scripts/manifest.py"


rule tables:
    """The study's tables from metrics rows and pair statistics alone: main (a row per model, a
    column per benchmark, the average, the change vs base with a paired bootstrap interval, the
    provenance of each row) and data quality (a row per run)."""
    input:
        metrics=eval_metrics(),
        stats=[
            f"results/pairs/{PLAN.runs[r]['pairs']}/stats.json" for r in TRAINED_RUNS
        ],
    output:
        main=report(
            f"{tables_dir()}/main.csv",
            caption="../report/main.rst",
            category="Tables",
            labels={"name": "main: SubEM / EM / F1 per benchmark"},
        ),
        main_md=f"{tables_dir()}/main.md",
        provenance=f"{tables_dir()}/main.provenance.json",
        quality=report(
            f"{tables_dir()}/data_quality.csv",
            caption="../report/data_quality.rst",
            category="Tables",
            labels={"name": "data quality per run"},
        ),
        quality_md=f"{tables_dir()}/data_quality.md",
    log:
        f"results/logs/tables/{STUDY}.log",
    conda:
        "../envs/base.yaml"
    params:
        models=EVAL_ROWS,
        runs=TRAINED_RUNS,
        benchmarks=BENCHMARKS,
        resamples=config["tables"]["bootstrap_resamples"],
        confidence=config["tables"]["confidence"],
        seed=config["seed"],
        code=CODE["tables"],
    script:
        "../workflow_scripts/tables.py"


rule plot_rollout:
    """Rollout figures: mean reward per round (a line per run); arm values over rounds with
    evidence chunks marked (the first run with rollouts); evidence coverage per round against
    random chunks (a line per run)."""
    input:
        [
            f"results/rollout/{PLAN.runs[r]['rollout']}/{s}.jsonl"
            for r in ROLLOUT_RUNS
            for s in SHARDS
        ],
    output:
        reward=report(
            f"{plots_dir()}/rollout_reward.png",
            caption="../report/rollout_reward.rst",
            category="Rollout",
            labels={"name": "mean reward per round"},
        ),
        arms=report(
            f"{plots_dir()}/arm_values.png",
            caption="../report/arm_values.rst",
            category="Rollout",
            labels={"name": "arm values over rounds"},
        ),
        evidence=report(
            f"{plots_dir()}/evidence_per_round.png",
            caption="../report/evidence_per_round.rst",
            category="Rollout",
            labels={"name": "evidence coverage per round"},
        ),
    log:
        f"results/logs/plots/{STUDY}.rollout.log",
    conda:
        "../envs/base.yaml"
    params:
        runs={
            r: [f"results/rollout/{PLAN.runs[r]['rollout']}/{s}.jsonl" for s in SHARDS]
            for r in ROLLOUT_RUNS
        },
        n_samples=3,
        code=CODE["plots"],
    script:
        "../workflow_scripts/plots.py"


rule plot_dpo_loss:
    """DPO training loss, reward accuracy and margin per step of every run, from LLaMA-Factory's
    trainer logs (the adapter's trainer_state.json where it has the DPO metrics)."""
    input:
        [f"results/dpo/{PLAN.runs[r]['dpo']}/trainer_log.jsonl" for r in TRAINED_RUNS],
    output:
        report(
            f"{plots_dir()}/dpo_loss.png",
            caption="../report/dpo_loss.rst",
            category="DPO",
            labels={"name": "training loss"},
        ),
    log:
        f"results/logs/plots/{STUDY}.dpo_loss.log",
    conda:
        "../envs/base.yaml"
    params:
        runs={
            r: f"results/dpo/{PLAN.runs[r]['dpo']}/trainer_log.jsonl"
            for r in TRAINED_RUNS
        },
        code=CODE["plots"],
    script:
        "../workflow_scripts/plots.py"


rule plot_benchmarks:
    """SubEM bars per benchmark and model, with bootstrap 95 % whiskers."""
    input:
        eval_metrics(),
    output:
        report(
            f"{plots_dir()}/benchmarks_subem.png",
            caption="../report/benchmarks_subem.rst",
            category="Benchmarks",
            labels={"name": "SubEM per benchmark"},
        ),
    log:
        f"results/logs/plots/{STUDY}.benchmarks.log",
    conda:
        "../envs/base.yaml"
    params:
        models=EVAL_ROWS,
        benchmarks=BENCHMARKS,
        resamples=config["tables"]["bootstrap_resamples"],
        confidence=config["tables"]["confidence"],
        seed=config["seed"],
        code=CODE["plots"],
    script:
        "../workflow_scripts/plots.py"

"""Rules `plot_rollout`, `plot_dpo_loss`, `plot_benchmarks`: PNG figures (thin adapter)."""
from longmab.dpo import read_trainer_log
from longmab.io import read_json, read_jsonl
from longmab.logs import setup_logging
from pathlib import Path

from longmab.plots import (
    plot_arm_values,
    plot_benchmark_bars,
    plot_dpo_loss,
    plot_evidence_per_round,
    plot_reward_per_round,
)
from longmab.tables import main_table


def main(smk):
    log = setup_logging(smk.log[0])
    p = smk.params
    if smk.rule == "plot_rollout":
        by_run = {run: [r for path in paths for r in read_jsonl(path)] for run, paths in p.runs.items()}
        out = plot_reward_per_round(by_run, smk.output.reward)
        first = next(iter(by_run.values()), [])
        plot_arm_values(first, smk.output.arms, n_samples=p.n_samples)
        ev = plot_evidence_per_round(by_run, smk.output.evidence)
        log.info("evidence coverage (all) per run: %s vs random chunks %s",
                 {run: v["all"] for run, v in ev.items()}, {run: v["chance_all"] for run, v in ev.items()})
        log.info("rollout: mean reward per round %s",
                 {run: [round(x, 3) for x in v["mean_reward"]] for run, v in out.items()})
    elif smk.rule == "plot_dpo_loss":
        def rows(path):  # the trainer state has the DPO metrics (reward accuracy, margins) too
            state = Path(path).parent / "adapter" / "trainer_state.json"
            return read_trainer_log(state if state.exists() else path)

        out = plot_dpo_loss({run: rows(path) for run, path in p.runs.items()}, smk.output[0])
        log.info("dpo loss: %s", {run: len(v["steps"]) for run, v in out.items()})
    elif smk.rule == "plot_benchmarks":
        rows = [read_json(path) for path in smk.input]
        table = main_table(rows, models=list(p.models), benchmarks=list(p.benchmarks), resamples=p.resamples,
                           confidence=p.confidence, seed=p.seed)
        intervals = {(t["model"], b): (t[f"{b}_subem_lo"], t[f"{b}_subem_hi"]) for t in table for b in p.benchmarks}
        plot_benchmark_bars(rows, smk.output[0], intervals=intervals,
                            title=f"SubEM per benchmark ({p.confidence * 100:g} % bootstrap intervals)")
    else:
        raise ValueError(f"no plot for rule {smk.rule}")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

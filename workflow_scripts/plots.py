"""Rules `plot_rollout`, `plot_dpo_loss`, `plot_benchmarks`: PNG figures (thin adapter)."""
from longmab.dpo import read_trainer_log
from longmab.io import read_json, read_jsonl
from longmab.logs import setup_logging
from longmab.plots import plot_arm_values, plot_benchmark_bars, plot_dpo_loss, plot_reward_per_round


def main(smk):
    log = setup_logging(smk.log[0])
    if smk.rule == "plot_rollout":
        rows = [r for path in smk.input for r in read_jsonl(path)]
        out = plot_reward_per_round(rows, smk.output.reward)
        plot_arm_values(rows, smk.output.arms, n_samples=smk.params.n_samples)
        log.info("rollout: mean reward per round %s", [round(x, 3) for x in out["mean_reward"]])
    elif smk.rule == "plot_dpo_loss":
        out = plot_dpo_loss(read_trainer_log(smk.input[0]), smk.output[0], title=f"DPO training loss ({smk.params.run})")
        log.info("dpo loss: %d steps", len(out["steps"]))
    elif smk.rule == "plot_benchmarks":
        plot_benchmark_bars([read_json(path) for path in smk.input], smk.output[0])
    else:
        raise ValueError(f"no plot for rule {smk.rule}")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

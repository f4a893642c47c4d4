# Shared Python for the rules: config validation, paths, shard lists, input functions.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow_scripts"))
from longmab.config import ConfigError, validate_config  # noqa: E402

try:
    validate_config(config)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

RUN = config["run"]
SHARDS = [f"{i:03d}" for i in range(config["data"]["shards"])]
EMBEDDED_POLICY = "results/models/policy"
# Evaluated models: "base" (the configured policy) and this run's merged DPO model (named by the run).
if RUN == "base":
    raise WorkflowError("config key 'run': 'base' is reserved for the untrained policy's evaluation")
EVAL_MODELS = [RUN if m == "trained" else m for m in config["eval"]["models"]]
BENCHMARKS = list(config["eval"]["benchmarks"])
PLOTS = [
    "results/plots/rollout_reward.png",
    "results/plots/arm_values.png",
    "results/plots/dpo_loss.png",
    "results/plots/benchmarks_subem.png",
]


wildcard_constraints:
    shard=r"\d\d\d+",
    run=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def policy_input():
    """The built embedded model folder as an input, or nothing for a user path / hub id."""
    return [EMBEDDED_POLICY] if config["models"]["policy"] == "embedded" else []


def policy_path():
    """model_name_or_path of the policy: the built embedded folder or the configured path / hub id."""
    return EMBEDDED_POLICY if config["models"]["policy"] == "embedded" else config["models"]["policy"]


def merged_model(run):
    return f"results/dpo/{run}/merged"


def deepspeed_input():
    """The DeepSpeed config file as an input of the DPO training (nothing when unset)."""
    return [config["dpo"]["deepspeed"]] if config["dpo"]["deepspeed"] else []


def eval_model_input(wildcards):
    """The evaluated model folder: the built embedded policy (or nothing for a user path / hub id)
    for "base", the merged DPO model for the run."""
    return policy_input() if wildcards.model == "base" else [merged_model(wildcards.model)]


def eval_model_path(wildcards):
    return policy_path() if wildcards.model == "base" else merged_model(wildcards.model)


def eval_metrics(models=None):
    return expand(
        "results/eval/{model}/{bench}/metrics.json",
        model=models or EVAL_MODELS,
        bench=BENCHMARKS,
    )


def engine_params(backend=None):
    """Everything about the engine that changes generated text (a plain dict: a params rerun trigger)."""
    return {
        "backend": backend or config["engine"]["backend"],
        "dtype": config["engine"]["dtype"],
        "max_model_len": config["engine"]["max_model_len"],
        "model": config["models"]["policy"],
    }


def final_outputs():
    """The default target: the merged model, the benchmark tables and the plots."""
    return [
        f"results/pairs/{RUN}/stats.json",
        merged_model(RUN),
        "results/tables/benchmarks.csv",
        "results/tables/benchmarks.md",
        *PLOTS,
    ]

# Shared Python for the rules: config validation, the runs' plan (every output named by what
# determines it), input functions and parameter lookups. The logic lives in the library
# (workflow_scripts/longmab/runs.py, config.py, provenance.py); this file only wires it.
import sys
from pathlib import Path

from snakemake.utils import validate

WORKFLOW_SCRIPTS = str(Path(workflow.basedir) / "workflow_scripts")
sys.path.insert(0, WORKFLOW_SCRIPTS)
from longmab.jobenv import prefer_library  # noqa: E402

# Jobs import the library of THIS workflow, not whatever checkout an editable install points to.
prefer_library(WORKFLOW_SCRIPTS)

from longmab.config import (
    ConfigError,
    all_problems,
    coerce_cli_scalars,
    validate_runs,
)  # noqa: E402
from longmab.provenance import code_hash, settings_hash  # noqa: E402
from longmab.runs import (
    TAG_PATTERN,
    build_plan,
    trains,
    warmup_settings,
)  # noqa: E402

# `--config 'rollout={rounds: 4}'` hands nested values over as strings: read them as the numbers /
# booleans the schema wants. Then every problem at once, before any job, each named by its key and
# value: the schema's (bad keys and values), then what it cannot express (files, sample counts,
# values that contradict each other; file contents are read in the main process only).
coerce_cli_scalars(config)
_problems = all_problems(config, deep=workflow.is_main_process)
if _problems:
    raise WorkflowError("invalid configuration:\n  " + "\n  ".join(_problems))
validate(config, "../schemas/config.schema.yaml")  # fills the schema's defaults
try:
    RUN_CONFIGS = validate_runs(config)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None


# The version of the library code each rule script runs (its import closure, docstrings and
# comments excluded): a params value, so a code change re-runs that stage and what follows. (The DPO
# rules have none: their code names their folder instead, below.)
# The chain to the trained model (probe ... pairs, DPO, merge) goes first when jobs compete for
# cores: the base model's evaluation needs only the policy and would otherwise start beside the
# first probe shard and delay everything behind it (measured in the embedded `make run`). A
# scheduling hint only: it re-runs nothing.
PREFERENCE_PRIORITY = 10

CODE = {
    name: code_hash(Path(WORKFLOW_SCRIPTS) / f"{name}.py")
    for name in (
        "data",
        "build_model",
        "warmup",
        "probe",
        "embed",
        "rollout",
        "sealong",
        "mbr",
        "pairs",
        "evaluate",
        "tables",
        "plots",
    )
}
# The training code (longmab/dpo.py: the LLaMA-Factory arguments and runs) also names the trained
# model's folder: new training code trains a new adapter beside the old one instead of replacing it.
try:
    PLAN = build_plan(
        config,
        dpo_code=code_hash(
            Path(WORKFLOW_SCRIPTS) / "longmab" / "dpo.py", follow_imports=False
        ),
        configs=RUN_CONFIGS,
    )
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration:\n  {exc}") from None
STUDY = PLAN.study
RUNS = list(PLAN.runs)
SHARDS = [f"{i:03d}" for i in range(config["data"]["shards"])]
# The embedded SmolLM2 as built from its wheel, and the policy the jobs use: the same folder, or its
# format warm-up (models.warmup, rule embedded_warmup) in a folder named by the warm-up settings.
EMBEDDED_BASE = "results/models/policy"
WARMUP = warmup_settings(config)
EMBEDDED_POLICY = (
    EMBEDDED_BASE
    if WARMUP is None
    else f"results/models/policy-warmup-{settings_hash(WARMUP)}"
)
BENCHMARKS = list(config["eval"]["benchmarks"])
# An evaluation-only config (no "trained" in eval.models) trains nothing: its runs are not built.
TRAINS = trains(config)
TRAINED_RUNS = RUNS if TRAINS else []
EVAL_TAGS = (
    ([PLAN.base] if "base" in config["eval"]["models"] else [])
    + [PLAN.runs[r]["eval"] for r in TRAINED_RUNS]
    + list(PLAN.external.values())
)
# The rows of the main table, in the order of EVAL_TAGS.
EVAL_ROWS = (
    (["base"] if "base" in config["eval"]["models"] else [])
    + TRAINED_RUNS
    + list(PLAN.external)
)
ROLLOUT_RUNS = [r for r in TRAINED_RUNS if "rollout" in PLAN.runs[r]]


wildcard_constraints:
    shard=r"\d\d\d+",
    tag=TAG_PATTERN,


# --------------------------------------------------------------------------------------------------
# Plan lookups (params are plain values: Snakemake's params trigger re-runs exactly what changed)


def det(stage, wc):
    """The determinants of ``stage``'s folder ``wc.tag`` (a plain dict)."""
    return PLAN.stages[stage][wc.tag]


def P(stage, *keys, default=None):
    """A params function: ``det(stage, wc)[k1][k2]...`` (``default`` when a key is absent)."""

    def lookup(wc):
        value = det(stage, wc)
        for k in keys:
            if not isinstance(value, dict) or k not in value:
                return default
            value = value[k]
        return value

    return lookup


def engine_param(stage):
    """The engine settings of a generating stage, as the rule scripts read them."""

    def lookup(wc):
        e = det(stage, wc)["engine"]
        # the policy's name (the warm-up settings, when any, name the embedded folder); an external
        # evaluation row's own model
        policy = e.get("policy", det(stage, wc).get("model", {}).get("model"))
        return {
            "backend": e["backend"],
            "dtype": e["dtype"],
            "max_model_len": e["max_model_len"],
            "model": policy if isinstance(policy, str) else policy["name"],
            # the text-changing engine.vllm arguments (the speed knobs come from the config itself)
            **({"vllm": e["vllm"]} if "vllm" in e else {}),
        }

    return lookup


def run_config(stage):
    """A run config that owns ``stage``'s folder (they agree on every key that matters to it)."""

    def lookup(wc):
        runs = PLAN.runs_of(stage, wc.tag)
        return PLAN.configs[runs[0]] if runs else config

    return lookup


def data_dir(tag):
    return f"results/data/{tag}"


def data_shard(stage):
    return lambda wc: f"{data_dir(det(stage, wc)['data'])}/shards/{wc.shard}.jsonl"


def policy_input():
    """The policy as a job input: the built embedded model folder, the download record of a hub id
    (rules/download.smk: downloaded once, before any GPU job), or nothing for a local folder.
    """
    if config["models"]["policy"] == "embedded":
        return [EMBEDDED_POLICY]
    return [DOWNLOADS.policy_record] if DOWNLOADS.policy_record else []


def embedder_input(stage):
    """The embedder's download record for a hub id (nothing for "embedded" or a local folder, or
    for a random init, which needs no embedder)."""

    def inputs(wc):
        if not det(stage, wc).get("embedder") or not DOWNLOADS.embedder_record:
            return []
        return [DOWNLOADS.embedder_record]

    return inputs


def mbr_embedder_input(wc):
    """SeaLong's MBR embedder as a job input: its download record (a hub id), else nothing."""
    name = det("mbr", wc)["embedder"]
    if name in DOWNLOADS.mbr_records:
        return [DOWNLOADS.mbr_records[name]]
    if name == config["models"]["embedder"] and DOWNLOADS.embedder_record:
        return [DOWNLOADS.embedder_record]
    return []


def policy_path():
    """model_name_or_path of the policy: the built embedded folder or the configured path / hub id."""
    return (
        EMBEDDED_POLICY
        if config["models"]["policy"] == "embedded"
        else config["models"]["policy"]
    )


def merged_model(dpo_tag):
    return f"results/dpo/{dpo_tag}/merged"


def deepspeed_input(wc):
    """The DeepSpeed config file as an input of the DPO training (nothing when unset)."""
    ds = det("dpo", wc)["dpo"]["deepspeed"]
    return [ds] if ds else []


def external_merged(tag):
    """An external row's model with its LoRA adapter merged in (rule merge_adapter)."""
    return f"results/models/external/{tag}"


def external_model_input(name):
    """An external model as a job input: its download record (hub id) or nothing (local folder)."""
    rec = DOWNLOADS.eval_records.get(name)
    return [rec] if rec else []


def eval_served_adapter(wc):
    """Whether the row's model is its LoRA adapter applied by the engine (eval.adapters), not merged."""
    return det("eval", wc)["model"].get("served") == "adapter"


def eval_model_input(wc):
    """The evaluated model folder: the built embedded policy (or nothing for a user path / hub id)
    for the base model, the merged DPO model for a run; for an external row its download record,
    or the merged folder when it has an adapter (nothing for a plain local folder). With
    eval.adapters the model an adapter is applied to: the policy, the external row's model.
    """
    model = det("eval", wc)["model"]
    served = eval_served_adapter(wc)
    if model["kind"] == "external":
        if model["adapter"] and not served:
            return [external_merged(wc.tag)]
        return external_model_input(model["name"])
    if model["kind"] == "base" or served:
        return policy_input()
    return [merged_model(model["dpo"])]


def eval_adapter_input(wc):
    """The adapter folder a run's row applies at generation time (eval.adapters): its DPO adapter,
    an output of dpo_train (an external row's adapter is a user folder, a param as in merge_adapter).
    """
    trained = det("eval", wc)["model"]["kind"] == "trained"
    return [eval_adapter(wc)] if trained and eval_served_adapter(wc) else []


def eval_model_path(wc):
    model = det("eval", wc)["model"]
    served = eval_served_adapter(wc)
    if model["kind"] == "external":
        return (
            external_merged(wc.tag)
            if model["adapter"] and not served
            else model["model"]
        )
    return (
        policy_path()
        if model["kind"] == "base" or served
        else merged_model(model["dpo"])
    )


def eval_revision(wc):
    """The hub revision of the evaluated model (recorded in provenance)."""
    model = det("eval", wc)["model"]
    if model["kind"] == "external":
        return model["revision"]
    return (
        config["models"].get("revision")
        if model["kind"] == "base" or eval_served_adapter(wc)
        else None
    )


def eval_adapter(wc):
    """The LoRA adapter a row's model was merged from: a run's DPO adapter, an external row's own."""
    model = det("eval", wc)["model"]
    if model["kind"] == "external":
        return model["adapter"]
    return None if model["kind"] == "base" else f"results/dpo/{model['dpo']}/adapter"


def pairs_inputs(wc):
    """Method-dependent inputs of the pair stage: rollout shards (+ probe stats) for LongMab-PO,
    MBR-scored samples (+ sampling stats) for SeaLong; the data manifest and the policy tokenizer.
    """
    d = det("pairs", wc)
    if (
        d["method"] == "file"
    ):  # pairs.from_file: the file and the tokenizer that measures it
        return {"file": d["file"], "model": policy_input()}
    tags = PLAN.runs[PLAN.runs_of("pairs", wc.tag)[0]]
    inputs = {
        "manifest": f"{data_dir(tags['data'])}/manifest.json",
        "model": policy_input(),
    }
    if d["method"] == "sealong":
        inputs["scored"] = [f"results/mbr/{d['mbr']}/{s}.jsonl" for s in SHARDS]
        inputs["stage_stats"] = [
            f"results/sealong/{tags['sealong']}/{s}.stats.json" for s in SHARDS
        ]
    else:
        inputs["rollouts"] = [
            f"results/rollout/{d['rollout']}/{s}.jsonl" for s in SHARDS
        ]
        inputs["stage_stats"] = [
            f"results/rollout/{d['rollout']}/{s}.stats.json" for s in SHARDS
        ]
        inputs["probe_stats"] = [
            f"results/probe/{tags['probe']}/{s}.stats.json" for s in SHARDS
        ]
    return inputs


def eval_name(wc):
    """The model's name in metrics rows and tables: "base", the run's or the external row's name."""
    model = det("eval", wc)["model"]
    if model["kind"] == "external":
        return model["name"]
    if model["kind"] == "base":
        return "base"
    return ", ".join(PLAN.runs_of("eval", wc.tag))


def eval_metrics(tags=None):
    return expand(
        "results/eval/{tag}/{bench}/metrics.json",
        tag=tags or EVAL_TAGS,
        bench=BENCHMARKS,
    )


def tables_dir():
    return f"results/tables/{STUDY}"


def plots_dir():
    return f"results/plots/{STUDY}"


PLOTS = (
    [f"{plots_dir()}/benchmarks_subem.png"]
    + ([f"{plots_dir()}/dpo_loss.png"] if TRAINED_RUNS else [])
) + (
    [f"{plots_dir()}/rollout_reward.png", f"{plots_dir()}/arm_values.png"]
    if ROLLOUT_RUNS
    else []
)
TABLES = [
    f"{tables_dir()}/{name}.{ext}"
    for name in ("main", "data_quality")
    for ext in ("csv", "md")
]


def final_outputs():
    """The default target: every run's merged model, the study's tables and plots, the manifest."""
    return [
        f"results/runs/{STUDY}.json",
        *(f"results/pairs/{PLAN.runs[r]['pairs']}/stats.json" for r in TRAINED_RUNS),
        *(merged_model(PLAN.runs[r]["dpo"]) for r in TRAINED_RUNS),
        *TABLES,
        *PLOTS,
    ]


def _note_kept_adapters():
    """Say so when a run will train a new adapter beside one trained with other settings or code
    (nothing is ever replaced: the folders are named by what determines them)."""
    for run, tags in PLAN.runs.items():
        current = Path("results/dpo") / tags["dpo"]
        if (current / "adapter").exists():
            continue
        for old in sorted(Path("results/dpo").glob(f"{run}-*")):
            if (
                old != current
                and (old / "adapter").is_dir()
                and old.name.rsplit("-", 1)[0] == run
            ):
                logger.warning(
                    f"run {run}: {old}/adapter was trained with other settings or training code; it is "
                    f"kept, and the current settings train a new adapter in {current} "
                    f"(results/runs/{STUDY}.json records which folder is which)"
                )


_note_kept_adapters()

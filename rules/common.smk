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


wildcard_constraints:
    shard=r"\d{3,}",
    run=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def policy_input():
    """The built embedded model folder as an input, or nothing for a user path / hub id."""
    return [EMBEDDED_POLICY] if config["models"]["policy"] == "embedded" else []



def engine_params():
    """Everything about the engine that changes generated text (a plain dict: a params rerun trigger)."""
    return {
        "backend": config["engine"]["backend"],
        "dtype": config["engine"]["dtype"],
        "max_model_len": config["engine"]["max_model_len"],
        "model": config["models"]["policy"],
    }


def final_outputs():
    return [
        f"results/pairs/{RUN}/pairs.jsonl",
        f"results/pairs/{RUN}/dataset_info.json",
        f"results/pairs/{RUN}/stats.json",
    ]

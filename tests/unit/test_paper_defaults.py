"""Paper defaults that the reference implementation sets and that are easy to lose (issue #9.6, #9.7)."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

from longmab.config import load_schema, validate_config

SCRIPTS = Path(__file__).resolve().parents[2] / "workflow_scripts"


def _adapter(name: str):
    spec = importlib.util.spec_from_file_location(f"adapter_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_decoding_is_greedy_with_presence_penalty_1():
    ev = validate_config({}, load_schema())["eval"]
    assert ev["temperature"] == 0.0 and ev["presence_penalty"] == 1.0 and ev["max_tokens"] == 1024
    sampling = _adapter("evaluate").eval_sampling(SimpleNamespace(**{k: ev[k] for k in ("temperature", "presence_penalty", "max_tokens")}))
    assert sampling.greedy and sampling.presence_penalty == 1.0 and sampling.max_tokens == 1024
    custom = validate_config({"eval": {"presence_penalty": 0.0}}, load_schema())["eval"]
    assert _adapter("evaluate").eval_sampling(SimpleNamespace(**custom)).presence_penalty == 0.0

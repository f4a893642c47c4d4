"""Making the engine a job asks for: the backend from the config, the model from a path or a
download record, the eval stage's own settings."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .base import Engine
from .cpu import default_cpu_cores
from .server import resolve_mode

log = logging.getLogger("longmab")


def make_engine(backend: str, model_path: str, mode: str | None = None, run_dir: str = ".", **kw: Any) -> Engine:
    """Create an engine: ``backend`` is ``"vllm"`` or ``"transformers"`` (alias ``"hf"``).

    Keyword arguments go to the engine class (``dtype``, ``max_model_len``, ``seed``, and
    ``batch_size`` / ``num_threads`` / ``device`` for transformers or any ``vllm.LLM`` argument and
    ``cpu_env`` for vLLM); ``vllm`` is the config's ``engine.vllm`` mapping (``vllm.LLM`` arguments,
    checked by :func:`check_vllm_args`; ignored by the transformers engine). ``None`` values are
    dropped so config files can leave them unset. ``model_path`` may be a download record
    (``rules/download.smk``, :func:`longmab.hub.resolve_local`).

    ``cpu_cores`` (``engine.cpu_cores``) is the cores and threads of a CPU engine: vLLM's bound
    cores, or the transformers engine's ``num_threads``; None takes :func:`~longmab.engines.cpu.default_cpu_cores`
    (1 in process, every core for a run's server).

    ``mode`` is ``engine.mode``: ``"server"`` returns a client of the run's shared engine for this
    model and these settings (:mod:`longmab.engines.server`; ``run_dir`` is the run's working
    directory), started when there is none; ``"inprocess"`` (default, and always in a SLURM job)
    starts the engine in this process.
    """
    from ..hub import resolve_local
    from ..models import resolve_model_path

    kw = {k: v for k, v in kw.items() if v is not None}
    if backend not in ("vllm", "transformers", "hf"):
        raise ValueError(f"unknown engine backend {backend!r} (expected 'vllm' or 'transformers')")
    vllm_args = kw.pop("vllm", None)
    path = resolve_model_path(resolve_local(model_path))  # a download record names a local snapshot
    mode = resolve_mode(mode)
    if kw.get("cpu_cores") is None and "num_threads" not in kw:
        kw["cpu_cores"] = default_cpu_cores(mode)
    if mode == "server":
        from .server import connect

        return connect(backend, path, {**kw, "vllm": vllm_args}, run_dir=run_dir)
    if backend == "vllm":
        from .vllm_engine import VLLMEngine

        return VLLMEngine(path, vllm=vllm_args, **kw)
    if vllm_args:
        log.info("transformers engine: engine.vllm %s is for vLLM only, ignored", sorted(vllm_args))
    kw.pop("cpu_env", None)
    cores = kw.pop("cpu_cores", None)
    if cores is not None and "num_threads" not in kw:
        kw["num_threads"] = cores  # torch threads of the transformers engine on a CPU
    from .hf_engine import HFEngine

    return HFEngine(path, **kw)


def engine_options(config: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The keyword arguments of :func:`make_engine` that a job reads from its config rather than its
    rule params (``vllm``, ``mode``, ``cpu_cores``): changing ``engine.mode`` or ``engine.cpu_cores``
    re-runs nothing (tests/test_incremental.py), while the text-changing ``engine.vllm`` arguments
    are in the rules' params too."""
    s = engine_settings(config, stage)
    return {"vllm": s["vllm"], "mode": s["mode"], "cpu_cores": s["cpu_cores"]}


def engine_settings(config: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The engine of a generating ``stage`` (probe, rollout, sealong, eval) from a validated config.

    Returns ``{"backend", "dtype", "max_model_len", "vllm", "mode", "cpu_cores"}``: the ``engine`` section, where the eval
    stage takes ``eval.backend``, ``eval.max_model_len`` and ``eval.vllm`` when they are set
    (``eval.vllm`` is merged over ``engine.vllm``, key by key). So a long-context evaluation (e.g.
    Qwen2.5 with YaRN at 131072 tokens) does not change the probe and rollout engine.
    """
    e = config["engine"]
    out = {"backend": e["backend"], "dtype": e["dtype"], "max_model_len": e["max_model_len"],
           "vllm": dict(e.get("vllm") or {}), "mode": e.get("mode") or "inprocess",
           "cpu_cores": e.get("cpu_cores")}
    if stage == "eval":
        ev = config.get("eval", {})
        if ev.get("backend"):
            out["backend"] = ev["backend"]
        if ev.get("max_model_len"):
            out["max_model_len"] = ev["max_model_len"]
        out["vllm"].update(ev.get("vllm") or {})
    return out

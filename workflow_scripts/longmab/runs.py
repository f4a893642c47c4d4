"""Named runs and the outputs they share (the paper's comparisons from one config).

A config holds one run (named by ``run:``) or several (``runs:``: run name -> overrides of the
method's keys ``init``, ``rollout``, ``pairs``, ``dpo``, ``sampling``). :func:`build_plan` turns it
into the folders every stage writes, each **named by what determines it**: a readable slug plus the
first 8 hex digits of the SHA-256 of the stage's *determinants* (the config values its output
depends on, including the tag of the stage it reads), e.g. ``results/probe/SmolLM2-135M-1a2b3c4d/``.
So

- runs share every stage whose determinants are equal (one probe per shard for all runs with the
  same policy, data, chunking and probe settings; one embed per init method and embedder; ...);
- two configs never write the same path unless the output would be identical (two paper configs
  with different policies share only the validated data shards);
- a config change writes new folders beside the old ones instead of replacing them (a trained
  adapter is never overwritten, whoever runs the pipeline), and the runs' manifest
  ``results/runs/{study}.json`` says which folder belongs to which run.

Stages and slugs::

    data     results/data/{train-file-stem}-{h}/         the validated, sharded samples
    probe    results/probe/{policy}-{h}/                   probe CoTs + chunks   (per policy/data/chunking/probe)
    embed    results/embed/{probe|query|random}-{h}/       initial arm values    (per probe tag and init)
    rollout  results/rollout/{strategy}-r{R}-k{k}-{h}/     UCB (or ablation) rounds
    sealong  results/sealong/n{N}-{h}/                     SeaLong: N full-context samples per question
    mbr      results/mbr/{embedder}-{h}/                   SeaLong: MBR scores of those samples
    pairs    results/pairs/{run}-{h}/                      LLaMA-Factory preference dataset
    dpo      results/dpo/{run}-{h}/                        adapter, merged model, loss log
    eval     results/eval/{run}-{h}/, results/eval/base-{policy}-{h}/

Pure Python (no Snakemake, no torch): ``rules/common.smk`` builds the plan at parse time and the
tests build it directly.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .provenance import file_sha256, settings_hash

#: Top-level keys a run may override.
METHOD_KEYS = ("init", "rollout", "pairs", "dpo", "sampling")
#: Stages in pipeline order.
STAGES = ("data", "probe", "embed", "rollout", "sealong", "mbr", "pairs", "dpo", "eval")
PAIR_METHODS = ("longmab", "sealong")
INIT_SLUGS = {"probe_similarity": "probe", "query_similarity": "query", "random": "random"}
#: Keys of a stage's config section that change how fast, not what, it computes (kept out of tags).
NOT_DETERMINING = {"rollout": {"schedule"}}
#: A tag: slug, dash, 8 hex digits (Snakemake wildcard constraint of every ``{tag}``).
TAG_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.+-]*-[0-9a-f]{8}"
RESERVED_RUN_NAMES = ("base",)

_SLUG_BAD = re.compile(r"[^A-Za-z0-9_.+-]+")


def slug(text: str, default: str = "x", max_len: int = 40) -> str:
    """A folder-safe short name: the last path component of ``text`` with odd characters replaced."""
    base = Path(str(text).rstrip("/")).name or str(text)
    s = _SLUG_BAD.sub("_", base).strip("_.-+")[:max_len]
    return s or default


def make_tag(slug_text: str, determinants: Mapping) -> str:
    """``{slug}-{8 hex}``; the hash covers the determinants only (the slug is for people)."""
    return f"{slug(slug_text)}-{settings_hash(determinants, 8)}"


def deep_merge(base: Any, over: Any) -> Any:
    """``over`` merged into a copy of ``base`` (mappings recursively; anything else replaces)."""
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = {k: copy.deepcopy(v) for k, v in base.items()}
        for k, v in over.items():
            out[k] = deep_merge(out[k], v) if k in out else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def resolve_runs(config: Mapping) -> dict[str, dict]:
    """Run name -> the complete config of that run (the config with the run's overrides merged in).

    Without ``runs:`` the config is one run named by ``run:``. The returned configs have no ``runs``
    key and ``run`` set to the run's name; they are *not* validated here (validate each with the
    schema: the overrides only name a few keys).

    Raises
    ------
    ConfigError
        An override of a key that is not a method key, a reserved or badly formed run name.
    """
    runs = config.get("runs")
    base = {k: v for k, v in config.items() if k != "runs"}
    if not runs:
        return {str(config["run"]): dict(copy.deepcopy(base))}
    out: dict[str, dict] = {}
    for name, over in runs.items():
        name = str(name)
        if name in RESERVED_RUN_NAMES:
            raise ConfigError(f"config key 'runs.{name}': the name {name!r} is reserved for the untrained policy")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
            raise ConfigError(f"config key 'runs.{name}': a run name is letters, digits and _.+- "
                              "(it names folders)")
        over = over or {}
        if not isinstance(over, Mapping):
            raise ConfigError(f"config key 'runs.{name}': expected a mapping of overrides, got {over!r}")
        bad = sorted(set(over) - set(METHOD_KEYS))
        if bad:
            raise ConfigError(f"config key 'runs.{name}.{bad[0]}': a run may override only "
                              f"{', '.join(METHOD_KEYS)} (the rest is shared by all runs of a config)")
        merged = deep_merge(base, over)
        merged["run"] = name
        out[name] = merged
    return out


def _template_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _templates(config: Mapping) -> dict[str, str]:
    from .prompts import load_templates  # light module; imported here to keep this one minimal

    try:
        return load_templates(config.get("prompts") or {})
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"config key 'prompts': {exc}") from None


def warmup_settings(config: Mapping) -> dict | None:
    """The format warm-up that builds the embedded policy (``models.warmup``, :mod:`longmab.warmup`),
    with the config's seed; ``None`` when there is none (disabled, or a policy other than embedded)."""
    models = config["models"]
    w = dict(models.get("warmup") or {})
    if models["policy"] != "embedded" or not w.pop("enabled", False):
        return None
    return {**w, "seed": int(config["seed"])}


def policy_id(config: Mapping) -> str | dict:
    """The policy as it enters the folder hashes: its name or hub id, or, for the warmed-up embedded
    policy, the name with the warm-up settings (a warm-up change re-runs everything downstream)."""
    warm = warmup_settings(config)
    return config["models"]["policy"] if warm is None else {"name": "embedded", "warmup": warm}


def policy_slug(policy: str) -> str:
    return "SmolLM2-135M" if policy == "embedded" else slug(policy, "policy")


#: vllm.LLM arguments that change generated text (the others are speed and memory knobs, which
#: never rename a folder nor re-run a job).
TEXT_VLLM_ARGS = ("hf_overrides", "kv_cache_dtype", "quantization", "tokenizer", "tokenizer_mode",
                  "revision", "tokenizer_revision", "trust_remote_code", "max_logprobs", "seed")


def engine_determinants(config: Mapping, stage: str = "probe") -> dict:
    """Everything about a generating stage's engine that changes generated text: backend, dtype,
    window, policy (+ revision) and the text-changing ``engine.vllm`` / ``eval.vllm`` arguments."""
    from .engines import engine_settings

    e = engine_settings(config, stage)
    models = config["models"]
    det = {"backend": e["backend"], "dtype": e["dtype"], "max_model_len": e["max_model_len"],
           "policy": policy_id(config), "revision": models.get("revision")}
    text_args = {k: v for k, v in (e.get("vllm") or {}).items() if k in TEXT_VLLM_ARGS}
    if text_args and e["backend"] == "vllm":
        det["vllm"] = text_args
    return det


def mbr_embedder(config: Mapping) -> tuple[str, str | None]:
    """``(name, revision)`` of SeaLong's MBR embedder: ``pairs.sealong.mbr_embedder``, else the
    run's ``models.embedder``."""
    s = config["pairs"]["sealong"]
    if s.get("mbr_embedder"):
        return str(s["mbr_embedder"]), s.get("mbr_embedder_revision")
    return str(config["models"]["embedder"]), config["models"].get("embedder_revision")


def probe_sampling(sampling: Mapping) -> dict:
    """The probe's sampling: ``sampling`` with ``probe_temperature`` (when set) as the temperature."""
    t = sampling.get("probe_temperature")
    return {"temperature": sampling["temperature"] if t is None else t, "top_p": sampling["top_p"],
            "presence_penalty": sampling["presence_penalty"], "max_tokens": sampling["max_tokens"]}


def rollout_sampling(sampling: Mapping) -> dict:
    return {k: sampling[k] for k in ("temperature", "top_p", "presence_penalty", "max_tokens")}


@dataclass
class Plan:
    """Where every run's outputs go.

    Attributes
    ----------
    study : str
        Names this config's tables, plots and run manifest (``study:``, default ``run:``).
    runs : dict
        Run name -> ``{stage: tag}`` for the stages the run uses (``rollout`` or ``sealong``/``mbr``).
    base : str
        Tag of the base model's evaluation.
    stages : dict
        Stage -> tag -> determinants (plain JSON values; what the tag's hash was taken over).
    configs : dict
        Run name -> the run's complete config.
    """

    study: str
    runs: dict[str, dict[str, str]] = field(default_factory=dict)
    base: str | None = None
    stages: dict[str, dict[str, dict]] = field(default_factory=lambda: {s: {} for s in STAGES})
    configs: dict[str, dict] = field(default_factory=dict)
    #: External evaluation rows (``eval.models`` mappings): row name -> eval tag.
    external: dict[str, str] = field(default_factory=dict)

    def add(self, stage: str, slug_text: str, determinants: dict) -> str:
        tag = make_tag(slug_text, determinants)
        known = self.stages[stage].get(tag)
        if known is not None and known != determinants:  # pragma: no cover - a 32-bit hash collision
            raise ConfigError(f"two different {stage} settings hash to the same tag {tag}")
        self.stages[stage][tag] = determinants
        return tag

    def tags(self, stage: str) -> list[str]:
        return list(self.stages[stage])

    def runs_of(self, stage: str, tag: str) -> list[str]:
        """The runs whose outputs include ``stage`` folder ``tag`` (all runs for the base eval)."""
        if stage == "eval" and tag == self.base:
            return sorted(self.runs)
        return sorted(r for r, tags in self.runs.items() if tags.get(stage) == tag)

    def chain(self, stage: str, tag: str) -> dict:
        """The determinants of ``stage``/``tag`` with every upstream tag replaced by its own chain:
        all config values that determined the output, for provenance records."""
        det = copy.deepcopy(self.stages[stage][tag])
        for up in STAGES:
            if isinstance(det.get(up), str) and det[up] in self.stages[up]:
                det[up] = {"tag": det[up], **self.chain(up, det[up])}
        model = det.get("model")
        if isinstance(model, dict) and isinstance(model.get("dpo"), str) and model["dpo"] in self.stages["dpo"]:
            model["dpo"] = {"tag": model["dpo"], **self.chain("dpo", model["dpo"])}
        return det

    def manifest(self) -> dict:
        """The run manifest (``results/runs/{study}.json``): runs -> folders, and each folder's settings."""
        return {
            "study": self.study,
            "base_eval": self.base,
            "runs": {name: {stage: f"results/{stage}/{tag}" for stage, tag in tags.items()}
                     for name, tags in self.runs.items()},
            "external": {name: f"results/eval/{tag}" for name, tag in self.external.items()},
            "stages": {stage: {tag: det for tag, det in tags.items()} for stage, tags in self.stages.items() if tags},
        }


def build_plan(config: Mapping, dpo_code: str = "", configs: Mapping[str, dict] | None = None) -> Plan:
    """Name every output of every run of ``config`` (a validated config, defaults filled).

    Parameters
    ----------
    config : mapping
        The validated config (``runs:`` optional).
    dpo_code : str
        :func:`longmab.provenance.code_hash` of the DPO rules' scripts: part of the DPO folder's
        name, so that a change of the training code trains a new adapter instead of replacing one.
    configs : mapping, optional
        Run name -> validated complete run config (default: :func:`resolve_runs`; pass the validated
        ones so that schema defaults are filled).
    """
    configs = dict(configs) if configs is not None else resolve_runs(config)
    study = str(config.get("study") or config["run"])
    plan = Plan(study=study, configs={k: copy.deepcopy(v) for k, v in configs.items()})
    for name, c in configs.items():
        plan.runs[name] = _plan_run(plan, name, c, dpo_code)
    first = next(iter(configs.values()))
    plan.base = _eval_tag(plan, first, {"kind": "base", "policy": policy_id(first),
                                                               "revision": config["models"].get("revision")},
                          "base-" + policy_slug(config["models"]["policy"]))
    for entry in config["eval"]["models"]:
        if isinstance(entry, Mapping):
            name = str(entry["name"])
            if name in RESERVED_RUN_NAMES or name in plan.runs or name in plan.external:
                raise ConfigError(f"config key 'eval.models': the row name {name!r} is taken (by the base "
                                  "model, a run or another row); give the external model another name")
            template = entry.get("chat_template")
            plan.external[name] = _eval_tag(plan, first, {
                "kind": "external", "name": name, "model": str(entry["model"]), "revision": entry.get("revision"),
                "adapter": entry.get("adapter"),
                "chat_template": {"path": str(template), "sha256": file_sha256(template)} if template else None},
                name)
    return plan


def trains(config: Mapping) -> bool:
    """Whether the config trains its runs: ``"trained"`` is among ``eval.models`` (an evaluation-only
    config lists only ``base`` and external models)."""
    return "trained" in config["eval"]["models"]


def _plan_run(plan: Plan, name: str, c: Mapping, dpo_code: str) -> dict[str, str]:
    templates = _templates(c)
    seed = int(c["seed"])
    tags: dict[str, str] = {}
    p = c["pairs"]
    if p.get("from_file"):
        # a ready-made preference file: named by its content, converted and trained like our pairs
        tags["pairs"] = plan.add("pairs", name, {
            "method": "file", "file": str(p["from_file"]), "sha256": file_sha256(p["from_file"]),
            "policy": policy_id(c), "revision": c["models"].get("revision"),
            "max_prompt_length": p["max_prompt_length"], "reserve_tokens": p["reserve_tokens"],
            "truncate": bool(p.get("from_file_truncate"))})
        return _plan_training(plan, name, c, dpo_code, tags)
    d = c["data"]
    tags["data"] = plan.add("data", Path(d["train"]).stem or "data",
                            {"train": d["train"], "max_samples": d["max_samples"], "shards": d["shards"]})
    engine = engine_determinants(c, "probe")
    answer = _template_digest(templates["answer"])
    method = c["pairs"].get("method", "longmab")
    common_pairs = {"policy": policy_id(c), "revision": c["models"].get("revision"),
                    "max_prompt_length": c["pairs"]["max_prompt_length"],
                    "reserve_tokens": c["pairs"]["reserve_tokens"], "template": answer,
                    "subem": c["reward"]["subem"], "seed": seed}
    if method == "longmab":
        tags["probe"] = plan.add("probe", policy_slug(c["models"]["policy"]), {
            "data": tags["data"], "engine": engine, "sampling": probe_sampling(c["sampling"]),
            "chunking": dict(c["chunking"]), "template": _template_digest(templates["probe"]),
            "subem": c["reward"]["subem"], "seed": seed})
        init = c["init"]["method"]
        embed = {"probe": tags["probe"], "method": init}
        if init == "random":
            embed["seed"] = seed
        else:
            embed.update({"embedder": c["models"]["embedder"], "revision": c["models"].get("embedder_revision"),
                          "prefix": c["models"]["embedder_query_prefix"]})
        tags["embed"] = plan.add("embed", INIT_SLUGS[init], embed)
        r = c["rollout"]
        tags["rollout"] = plan.add("rollout", f"{r['strategy']}-r{r['rounds']}-k{r['top_k']}", {
            "embed": tags["embed"], "engine": engine, "sampling": rollout_sampling(c["sampling"]),
            **{k: copy.deepcopy(v) for k, v in r.items() if k not in NOT_DETERMINING["rollout"]},
            "subem": c["reward"]["subem"], "template": answer,
            "seed": seed})
        tags["pairs"] = plan.add("pairs", name, {"rollout": tags["rollout"], "method": method, **common_pairs})
    elif method == "sealong":
        s = c["pairs"]["sealong"]
        instruction = _template_digest(s["instruction"])
        # only when not the default: the folders of configs without it keep their names
        prompt_mode = {"prompt": s["prompt"]} if s.get("prompt", "ours") != "ours" else {}
        tags["sealong"] = plan.add("sealong", f"n{s['n']}", {
            "data": tags["data"], "engine": engine,
            "sampling": {k: s[k] for k in ("n", "temperature", "top_p", "presence_penalty", "max_tokens")},
            "instruction": instruction, "template": answer, "seed": seed, **prompt_mode})
        embedder, revision = mbr_embedder(c)
        tags["mbr"] = plan.add("mbr", slug(embedder, "embedder"), {
            "sealong": tags["sealong"], "embedder": embedder, "revision": revision,
            # an explicit length, or (None) at least the outputs' budget: max_tokens + 32
            "max_seq_length": s.get("mbr_max_seq_length"), "min_seq_length": s["max_tokens"] + 32,
            "encode_kwargs": dict(s.get("mbr_encode_kwargs") or {})})
        tags["pairs"] = plan.add("pairs", name, {"mbr": tags["mbr"], "method": method,
                                                 "instruction": instruction, **common_pairs, **prompt_mode})
    else:  # pragma: no cover - the schema's enum
        raise ConfigError(f"config key 'pairs.method': unknown method {method!r} (expected {PAIR_METHODS})")
    return _plan_training(plan, name, c, dpo_code, tags)


def _plan_training(plan: Plan, name: str, c: Mapping, dpo_code: str, tags: dict[str, str]) -> dict[str, str]:
    """The DPO and eval folders of a run whose pairs folder is ``tags["pairs"]``."""
    seed = int(c["seed"])
    tags["dpo"] = plan.add("dpo", name, {
        "pairs": tags["pairs"], "dpo": copy.deepcopy(c["dpo"]), "policy": policy_id(c),
        "revision": c["models"].get("revision"), "template": c["models"]["template"], "seed": seed,
        "code": dpo_code,
        # only when set: the DPO folders of configs without it keep their names
        **({"default_system": c["models"]["default_system"]}
           if c["models"].get("default_system") is not None else {})})
    tags["eval"] = _eval_tag(plan, c, {"kind": "trained", "dpo": tags["dpo"]}, name)
    return tags


def _eval_tag(plan: Plan, c: Mapping, model: dict, slug_text: str) -> str:
    e = c["eval"]
    templates = _templates(c)
    engine = engine_determinants(c, "eval")
    if model["kind"] == "external":  # its own model: the policy does not determine its answers
        engine = {k: v for k, v in engine.items() if k not in ("policy", "revision")}
    if e.get("adapters") and (model["kind"] == "trained" or model.get("adapter")):
        # LoRA serving (eval.adapters): other numerics than the merged model, so its own folder;
        # only when set, so the folders of configs without it keep their names
        if engine["backend"] != "vllm":
            raise ConfigError("config key 'eval.adapters': LoRA serving needs the vLLM engine "
                              f"(eval.backend / engine.backend is {engine['backend']!r})")
        model = {**model, "served": "adapter"}
    return plan.add("eval", slug_text, {
        "model": model, "engine": engine,
        "benchmarks": copy.deepcopy(e["benchmarks"]),
        **{k: e.get(k) for k in ("max_samples", "max_input_len", "max_tokens", "temperature", "presence_penalty")},
        "template": _template_digest(templates["answer"]), "seed": int(c["seed"])})

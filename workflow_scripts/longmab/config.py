"""Configuration: JSON-schema validation with defaults, checks the schema cannot express, and error
messages that name the key and the value.

Two layers, both pure Python (no Snakemake):

- :func:`explain_errors` / :func:`validate_config`: the schema (``schemas/config.schema.yaml``), with
  one deliberate difference from plain JSON Schema: an ``integer`` key rejects a float such as
  ``4.0`` (JSON Schema 2020-12, and so ``snakemake.utils.validate``, accept it; ``rounds: 4.0`` then
  crashes a rollout job with a ``TypeError`` hours later).
- :func:`check_config` / :func:`check_runs`: what a valid-looking config can still get wrong, found
  before any job runs: files that do not exist (``data.train``, benchmark files, prompt ``.txt``
  files, local model folders, the DeepSpeed config), more shards than samples, values that contradict
  each other (an overlap that swallows the chunk, rollout prompts longer than the engine's window,
  pair prompts with no room for the context), a chat template LLaMA-Factory does not know.
"""


from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

from .errors import ConfigError
from .runs import RESERVED_RUN_NAMES, deep_merge, resolve_runs

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def _is_strict_integer(checker, instance) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


#: Draft 2020-12 with ``integer`` meaning a Python ``int`` (``4.0`` is not an integer here).
StrictValidator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_strict_integer),
)
_DefaultFiller = _with_defaults(StrictValidator)


_SCHEMA_CACHE: dict[tuple[str, int, int], dict] = {}


def load_schema(path: str | Path | None = None) -> dict:
    """The config schema (a fresh copy; the parsed file is cached until it changes on disk)."""
    path = Path(path or SCHEMA_PATH)
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _SCHEMA_CACHE:
        with open(path, encoding="utf-8") as fh:
            _SCHEMA_CACHE[key] = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return copy.deepcopy(_SCHEMA_CACHE[key])


def _key_of(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        return ".".join(parts + [extra[0]]) if extra else ".".join(parts) or "<top>"
    if error.validator == "required":
        return ".".join(parts) or "<top>"
    return ".".join(parts) or "<top>"


def _integer_expected(err) -> bool:
    """A type error on a float where the schema wants an integer (``4.0`` or ``2.5``)."""
    if err.validator != "type" or not isinstance(err.instance, float):
        return False
    types = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
    return "integer" in types and "number" not in types


_SCALAR_TYPES = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}


def _types(node: dict) -> set[str]:
    t = node.get("type", [])
    return {t} if isinstance(t, str) else set(t)


def coerce_cli_scalars(config: dict, schema: dict | None = None) -> list[str]:
    """Turn strings that stand for numbers, booleans or null into those, where the schema wants them.

    ``snakemake --config 'rollout={rounds: 4}'`` hands nested values over as strings (``'4'``); this
    reads each such string as YAML (``4``, ``1.0e-4``, ``true``, ``null``) when the schema does not
    allow a string at that key and the parsed value has an allowed type. Edits ``config`` in place
    (also inside ``runs:`` overrides, checked against the same sections); returns the keys changed.
    """
    schema = schema if schema is not None else load_schema()
    changed: list[str] = []

    def walk(node: Any, sch: dict, path: str) -> None:
        if not isinstance(node, dict):
            return
        props = sch.get("properties", {})
        for key, value in list(node.items()):
            sub = props.get(key)
            if sub is None and isinstance(sch.get("additionalProperties"), dict):
                sub = sch["additionalProperties"]
            if not isinstance(sub, dict):
                continue
            types = _types(sub)
            if isinstance(value, str) and types and "string" not in types and types & set(_SCALAR_TYPES):
                try:
                    parsed = yaml.safe_load(value)
                except yaml.YAMLError:
                    continue
                wanted = tuple(_SCALAR_TYPES[t] for t in types if t in _SCALAR_TYPES)
                if isinstance(parsed, bool) and "boolean" not in types:
                    continue
                if isinstance(parsed, wanted):
                    node[key] = parsed
                    changed.append(f"{path}{key}")
            elif isinstance(value, dict):
                walk(value, sub, f"{path}{key}.")

    walk(config, schema, "")
    runs = config.get("runs")
    if isinstance(runs, dict):
        for name, over in runs.items():
            walk(over, schema, f"runs.{name}.")
    return changed


def explain_errors(config: dict, schema: dict | None = None, prefix: str = "") -> list[str]:
    """Every schema violation of ``config`` as ``config key 'a.b': message`` (``[]`` when valid).

    Does not modify ``config`` (no defaults are filled). ``prefix`` is put before every key
    (``"runs.ablate."`` for a run's merged config).
    """
    schema = schema if schema is not None else load_schema()
    validator = StrictValidator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    lines = []
    for err in errors:
        key = _key_of(err)
        if err.validator == "additionalProperties":
            msg = f"unknown key (allowed: {', '.join(sorted(err.schema.get('properties', {})))})"
        elif _integer_expected(err):
            msg = f"must be an integer, got {err.instance!r}"
            if math.isfinite(err.instance) and err.instance == int(err.instance):
                msg += f" (write {int(err.instance)})"
        else:
            msg = err.message
        lines.append(f"config key '{prefix}{key}': {msg}")
    return lines


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Validate ``config`` in place against the schema, filling defaults; return it.

    Raises
    ------
    ConfigError
        Listing each problem as ``config key 'a.b': message``.
    """
    schema = schema if schema is not None else load_schema()
    lines = explain_errors(config, schema)
    if lines:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    _DefaultFiller(schema).validate(config)
    # Cross-field checks the schema cannot express.
    if "trained" in config.get("eval", {}).get("models", []) and config["dpo"]["finetuning_type"] not in {"lora", "full", "freeze"}:
        raise ConfigError("config key 'dpo.finetuning_type': unsupported")
    return config


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it (defaults filled)."""
    with open(path, encoding="utf-8") as fh:
        config = yaml.safe_load(fh) or {}
    try:
        return validate_config(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def get(config: dict, dpath: str) -> Any:
    """``get(config, "rollout/top_k")`` — a slash path lookup with a clear KeyError."""
    node: Any = config
    for part in dpath.split("/"):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"config has no key '{dpath.replace('/', '.')}'")
        node = node[part]
    return node


# --------------------------------------------------------------------------------------------------
# Checks the schema cannot express (files, counts, values that contradict each other)

#: Tokens of a typical chunking fragment (the text up to one of ``! ? , . ;``), measured with the
#: SmolLM2 tokenizer: mean 13.8 on 100 MuSiQue contexts (../shared/data), 16.1 on data/train.jsonl.
#: Used only to translate ``chunking.overlap_fragments`` into tokens for :func:`check_config`.
TYPICAL_FRAGMENT_TOKENS = 16
#: The overlap (``overlap_fragments`` at :data:`TYPICAL_FRAGMENT_TOKENS` each) may take at most this
#: share of ``chunk_size``.
MAX_OVERLAP_SHARE = 0.5


class Problem:
    """One config problem: the key(s) it concerns (the first is the one named) and what is wrong."""

    __slots__ = ("keys", "text")

    def __init__(self, keys: str | tuple[str, ...], text: str):
        self.keys = (keys,) if isinstance(keys, str) else tuple(keys)
        self.text = text

    def line(self, prefix: str = "", key: str | None = None) -> str:
        return f"config key '{prefix}{key or self.keys[0]}': {self.text}"

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Problem({self.keys!r}, {self.text!r})"


def _resolve(path: str, basedir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else basedir / p


def count_samples(path: str | Path, block_size: int = 1 << 24) -> int:
    """Number of non-blank lines of a JSONL file, read in blocks of ``block_size`` bytes (no JSON
    parsing; a UTF-8 byte-order mark alone is blank).

    The ``data`` rule skips blank lines and rejects any bad line, so this is the number of samples
    the file holds when the ``data`` job succeeds. 0.7-0.8 s for a 240 MB file of 5000 samples
    (measured on a shared 2-core machine, warm page cache).
    """
    n = 0
    tail = b""
    with open(path, "rb") as fh:
        while True:
            block = fh.read(block_size)
            if not block:
                break
            lines = (tail + block).split(b"\n")
            tail = lines.pop()
            n += sum(1 for line in lines if line.strip() and line.strip() != b"\xef\xbb\xbf")
    if tail.strip() and tail.strip() != b"\xef\xbb\xbf":
        n += 1
    return n


_COUNT_CACHE: dict[tuple[str, int, int], int] = {}


def _cached_count(path: Path) -> int:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _COUNT_CACHE:
        _COUNT_CACHE[key] = count_samples(path)
    return _COUNT_CACHE[key]


def _check_file(key: str, value: str, basedir: Path, what: str, hint: str = "") -> tuple[Path | None, list[Problem]]:
    """``(resolved path, [])`` for an existing file, else ``(None, [Problem])``."""
    if not str(value).strip():
        return None, [Problem(key, f"is empty: set it to {what}")]
    path = _resolve(str(value), basedir)
    if path.is_dir():
        return None, [Problem(key, f"{value!r} is a directory, expected {what}")]
    if not path.is_file():
        where = "" if Path(str(value)).expanduser().is_absolute() else f" (relative to {basedir})"
        return None, [Problem(key, f"file not found: {value!r}{where}{'; ' + hint if hint else ''}")]
    return path, []


def _check_data(c: dict, basedir: Path, deep: bool) -> list[Problem]:
    d = c["data"]
    path, problems = _check_file("data.train", d["train"], basedir,
                                 "the raw training JSONL file ({id, input, answer, context} per line)")
    if problems or not deep:
        return problems
    n = _cached_count(path)
    if n == 0:
        return [Problem("data.train", f"{d['train']!r} holds no samples (no non-blank line)")]
    used = min(n, d["max_samples"]) if d["max_samples"] else n
    if d["shards"] > used:
        why = f"data.train {d['train']!r} has {n} samples"
        if d["max_samples"] and d["max_samples"] < n:
            why += f", data.max_samples uses {used}"
        return [Problem(("data.shards", "data.max_samples"),
                        f"{d['shards']} shards for {used} samples ({why}): {d['shards'] - used} shard(s) "
                        f"would be empty jobs; use at most {used}")]
    return []


def _check_external_models(c: dict, basedir: Path) -> list[Problem]:
    """The external rows of ``eval.models``: model folder or hub id, adapter folder, template file."""
    problems: list[Problem] = []
    for entry in c["eval"]["models"]:
        if not isinstance(entry, dict):
            continue
        key = f"eval.models.{entry['name']}"
        if entry["model"] == "embedded":
            problems.append(Problem(f"{key}.model", "'embedded' is the base row; name a model folder or hub id"))
        else:
            problems += _check_model(f"{key}.model", entry["model"], basedir, ("config.json",))
        if entry.get("adapter"):
            path = _resolve(entry["adapter"], basedir)
            if not (path / "adapter_config.json").is_file():
                problems.append(Problem(f"{key}.adapter", f"{entry['adapter']!r} is not a PEFT LoRA adapter folder "
                                                          "(no adapter_config.json); a hub adapter must be "
                                                          "downloaded first"))
        if entry.get("chat_template"):
            problems += _check_file(f"{key}.chat_template", entry["chat_template"], basedir,
                                    "a Jinja chat template file")[1]
    return problems


def _check_model(key: str, value: str, basedir: Path, marker_files: tuple[str, ...]) -> list[Problem]:
    """``embedded``, an existing model folder, or a hub id ``org/name`` (models.resolve_model_path
    and hub.is_hub_id decide the same way at run time)."""
    if value == "embedded":
        return []
    if not value.strip():
        return [Problem(key, "is empty: use 'embedded', a local model folder or a hub id (org/name)")]
    path = _resolve(value, basedir)
    if path.is_dir():
        if marker_files and not any((path / m).is_file() for m in marker_files):
            return [Problem(key, f"{value!r} is a folder without {' or '.join(marker_files)}: not a "
                                 "Hugging Face model folder")]
        return []
    if path.exists():
        return [Problem(key, f"{value!r} is a file, expected a model folder or a hub id (org/name)")]
    looks_like_path = Path(value).expanduser().is_absolute() or value.startswith((".", "~"))
    if looks_like_path:
        return [Problem(key, f"model folder not found: {value!r}")]
    from .hub import is_hub_id

    if not is_hub_id(value):
        return [Problem(key, f"{value!r} is neither an existing model folder (relative to {basedir}) nor a "
                             "hub id of the form org/name")]
    return []


def _check_prompts(c: dict, basedir: Path) -> list[Problem]:
    from .prompts import load_templates

    problems = []
    for name, value in (c.get("prompts") or {}).items():
        if isinstance(value, str) and value.strip().endswith(".txt"):
            path = _resolve(value.strip(), basedir)
            if not path.is_file():
                problems.append(Problem(f"prompts.{name}", f"template file not found: {value!r}"))
                continue
            value = str(path)
        try:
            load_templates({name: value})
        except (ValueError, OSError) as exc:
            given = c["prompts"][name]
            shown = repr(given) if len(repr(given)) <= 60 else repr(given)[:57] + "..."
            hint = "" if not isinstance(value, str) or "{" in value else (
                " (a value is a template string, or the path of a file ending in .txt)")
            problems.append(Problem(f"prompts.{name}", f"{shown}: {exc}{hint}"))
    return problems


def _check_benchmarks(c: dict, basedir: Path, deep: bool) -> list[Problem]:
    benchmarks = c["eval"]["benchmarks"]
    if not benchmarks:
        return [Problem("eval.benchmarks", "no benchmarks: the study's tables and plots average over "
                                           "them (an empty table would read as 0.0); name at least one")]
    problems = []
    for name, spec in benchmarks.items():
        key = f"eval.benchmarks.{name}.path"
        if spec.get("hub"):
            if not str(spec["path"]).strip():
                problems.append(Problem(key, "is empty: the downloaded set is written there"))
            continue  # rules/download.smk fetches it
        path, found = _check_file(key, spec["path"], basedir, f"the {spec['format']} JSONL file",
                                  hint=f"set eval.benchmarks.{name}.hub: true to download it")
        problems += found
        if path is None or not deep:
            continue
        first = _first_row(path)
        if first is None:
            problems.append(Problem(key, f"{spec['path']!r} holds no items"))
            continue
        if first[1] is None:
            problems.append(Problem(key, f"{spec['path']}:{first[0]}: not valid JSON (one object per line expected)"))
            continue
        from .benchmarks import BenchmarkError, normalize_item

        try:
            normalize_item(first[1], spec["format"], f"{spec['path']}:{first[0]}")
        except BenchmarkError as exc:
            problems.append(Problem(f"eval.benchmarks.{name}.format",
                                    f"{spec['format']!r} does not match the file: {exc}"))
    return problems


def _first_row(path: Path) -> tuple[int, Any] | None:
    """``(line number, parsed first non-blank line)`` (``(n, None)`` on bad JSON), or None if empty."""
    import json

    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    return number, json.loads(line)
                except json.JSONDecodeError:
                    return number, None
    return None


def _check_chunking(c: dict) -> list[Problem]:
    ch = c["chunking"]
    overlap_tokens = ch["overlap_fragments"] * TYPICAL_FRAGMENT_TOKENS
    if overlap_tokens > MAX_OVERLAP_SHARE * ch["chunk_size"]:
        most = int(MAX_OVERLAP_SHARE * ch["chunk_size"] // TYPICAL_FRAGMENT_TOKENS)
        return [Problem(("chunking.overlap_fragments", "chunking.chunk_size"),
                        f"{ch['overlap_fragments']} fragments of overlap are about {overlap_tokens} tokens "
                        f"(~{TYPICAL_FRAGMENT_TOKENS} per fragment), more than half of chunking.chunk_size "
                        f"{ch['chunk_size']}: a chunk adds only chunk_size minus the overlap's tokens of new "
                        "text (a single fragment once the overlap reaches chunk_size), so the chunks would "
                        "mostly repeat each other and together be many times the context; use "
                        f"overlap_fragments <= {most} or a larger chunk_size")]
    return []


def _window_problems(c: dict) -> list[Problem]:
    problems = []
    engine, sampling = c["engine"], c["sampling"]
    window = engine["max_model_len"]
    method = c["pairs"].get("method", "longmab")
    gen_key, gen_max = ("sampling.max_tokens", sampling["max_tokens"])
    if method == "sealong":
        gen_key, gen_max = ("pairs.sealong.max_tokens", c["pairs"]["sealong"]["max_tokens"])
    if gen_max >= window:
        problems.append(Problem((gen_key, "engine.max_model_len"),
                                f"{gen_max} new tokens leave no room for the prompt in engine.max_model_len "
                                f"{window}"))
    r, ch = c["rollout"], c["chunking"]
    if method == "longmab" and r["strategy"] in ("ucb", "random"):
        need = r["top_k"] * ch["chunk_size"] + sampling["max_tokens"]
        if need > window:
            problems.append(Problem(("rollout.top_k", "chunking.chunk_size", "sampling.max_tokens",
                                     "engine.max_model_len"),
                                    f"{r['top_k']} chunks of chunking.chunk_size {ch['chunk_size']} tokens plus "
                                    f"sampling.max_tokens {sampling['max_tokens']} need {need} tokens, more than "
                                    f"engine.max_model_len {window}: rollout prompts of long contexts would not fit"))
    e = c["eval"]
    eval_window = e.get("max_model_len") or window
    if e["max_tokens"] >= eval_window:
        problems.append(Problem(("eval.max_tokens", "eval.max_model_len" if e.get("max_model_len") else
                                 "engine.max_model_len"),
                                f"{e['max_tokens']} new tokens leave no room for the prompt in the eval "
                                f"engine's window of {eval_window} tokens"))
    p = c["pairs"]
    if p["reserve_tokens"] + gen_max >= p["max_prompt_length"]:
        problems.append(Problem(("pairs.reserve_tokens", "pairs.max_prompt_length", gen_key),
                                f"{p['reserve_tokens']} reserved tokens plus answers of up to {gen_max} tokens "
                                f"({gen_key}) fill pairs.max_prompt_length {p['max_prompt_length']}: the pair "
                                "prompts would have no room for the context"))
    cutoff = c["dpo"]["cutoff_len"]
    if cutoff < p["max_prompt_length"]:
        problems.append(Problem(("dpo.cutoff_len", "pairs.max_prompt_length"),
                                f"{cutoff} is below pairs.max_prompt_length {p['max_prompt_length']}: the pairs "
                                "are built to fit max_prompt_length tokens and LLaMA-Factory would cut them "
                                "again, losing the question or the answers (paper: 8500 vs 8192)"))
    return problems


def llamafactory_templates() -> set[str] | None:
    """Names of LLaMA-Factory's chat templates, read from its source without importing it (None when
    LLaMA-Factory is not installed in this environment)."""
    import importlib.util
    import re

    try:
        spec = importlib.util.find_spec("llamafactory")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        source = Path(base) / "data" / "template.py"
        if source.is_file():
            names = set(re.findall(r"register_template\(\s*name\s*=\s*[\"']([^\"']+)[\"']",
                                   source.read_text(encoding="utf-8")))
            return names or None
    return None


def _check_template(c: dict) -> list[Problem]:
    known = llamafactory_templates()
    name = c["models"]["template"]
    if known is None or name in known:
        return []
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=3)
    hint = f"; did you mean {', '.join(repr(x) for x in close)}?" if close else ""
    return [Problem("models.template", f"{name!r} is not a LLaMA-Factory chat template{hint} "
                                       f"({len(known)} known, see llamafactory/data/template.py)")]


def config_problems(config: dict, basedir: str | Path | None = None, deep: bool = True) -> list[Problem]:
    """Every problem :func:`check_config` reports, as :class:`Problem` objects (keys unprefixed)."""
    base = Path(basedir) if basedir is not None else Path.cwd()
    c = config
    problems: list[Problem] = []
    if str(c.get("run")) in RESERVED_RUN_NAMES and not c.get("runs"):
        problems.append(Problem("run", f"{c['run']!r} is reserved for the untrained policy's evaluation; "
                                       "choose another run name"))
    if c.get("preset") == "embedded" and c["models"]["policy"] != "embedded":
        problems.append(Problem(("preset", "models.policy"),
                                f"the preset is 'embedded' but models.policy is {c['models']['policy']!r}: every "
                                "value you did not set comes from config.yaml's CPU toy (chunk_size 64, 8 rounds "
                                "of top_k 2, 96-token answers, a 4096-token eval window, the synth_* benchmarks). "
                                "Start from the paper's settings (--configfile configs/paper-llama3.yaml my.yaml "
                                "--replace-workflow-config), or write `preset: custom` in your config to keep "
                                "these values on purpose (`longmab config show` lists every value and its source)"))
    from_file = c["pairs"].get("from_file")
    if from_file:  # trained from a ready-made preference file: no data, probe or rollout
        problems += _check_file("pairs.from_file", from_file, base,
                                "a preference file (JSON lines or a JSON list of prompt / chosen / rejected)")[1]
        if c["pairs"].get("method", "longmab") != "longmab":
            problems.append(Problem(("pairs.from_file", "pairs.method"),
                                    f"pairs.method {c['pairs']['method']!r} makes pairs, pairs.from_file "
                                    "brings them: set only one"))
    else:
        problems += _check_data(c, base, deep)
    problems += _check_model("models.policy", c["models"]["policy"], base, ("config.json",))
    problems += _check_model("models.embedder", c["models"]["embedder"], base, ("config.json", "modules.json"))
    problems += _check_prompts(c, base)
    problems += _check_benchmarks(c, base, deep)
    problems += _check_external_models(c, base)
    if c["dpo"].get("deepspeed"):
        problems += _check_file("dpo.deepspeed", c["dpo"]["deepspeed"], base, "a DeepSpeed JSON config")[1]
    problems += _check_chunking(c)
    problems += _window_problems(c)
    problems += _check_template(c)
    return problems


def check_config(config: dict, basedir: str | Path | None = None, where: str = "", deep: bool = True) -> list[str]:
    """Everything wrong with ``config`` that can be known before any job runs.

    Parameters
    ----------
    config : dict
        One run's complete config. Defaults need not be filled: the schema is applied to a copy first
        (its problems, if any, are returned alone, since the other checks assume valid types).
    basedir : path, optional
        Directory that relative paths in the config are relative to: Snakemake's working directory
        (default: the current directory).
    where : str
        Put before every key, e.g. ``"runs.ablate."`` for a run's merged config.
    deep : bool
        Also read file contents: count the training samples (for ``data.shards``) and parse the first
        row of every benchmark file (for its ``format``). ``False`` keeps to existence checks (cheap
        enough for every job's re-parse of the Snakefile on a cluster).

    Returns
    -------
    list of str
        ``config key '<where><key>': <what is wrong, with the value>`` per problem; ``[]`` when fine.
    """
    schema = load_schema()
    schema_lines = explain_errors(config, schema, prefix=where)
    if schema_lines:
        return schema_lines
    filled = validate_config(copy.deepcopy(config), schema)
    return [p.line(where) for p in config_problems(filled, basedir, deep)]


def _overridden(overrides: Any, key: str) -> bool:
    node = overrides
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def check_runs(config: dict, run_configs: dict[str, dict] | None = None, basedir: str | Path | None = None,
               deep: bool = True) -> list[str]:
    """:func:`check_config` for every run of ``config`` (``runs:``), each problem reported once.

    A problem caused by a run's override is named with the run's key (``config key
    'runs.ablate.rollout.top_k': ...``); one the runs share is named with the plain key.

    Parameters
    ----------
    config : dict
        The config as given (with or without ``runs:``).
    run_configs : dict, optional
        Run name -> complete (validated) config, e.g. :func:`validate_runs`
        (default: computed here).
    """
    schema = load_schema()
    if run_configs is None:
        lines = explain_errors(config, schema)
        if lines:
            return lines
        try:
            run_configs = validate_runs(validate_config(copy.deepcopy(config), schema), schema)
        except ConfigError as exc:
            return [line.strip() for line in str(exc).splitlines()[1:]] or [str(exc)]
    runs = config.get("runs") or {}
    out: list[str] = []
    for name, c in run_configs.items():
        over = (runs.get(name) or {}) if runs else {}
        schema_lines = explain_errors(c, schema, prefix=f"runs.{name}." if runs else "")
        found = schema_lines or []
        if not schema_lines:
            for p in config_problems(c, basedir, deep):
                mine = [k for k in p.keys if _overridden(over, k)]
                found.append(p.line(f"runs.{name}.", mine[0]) if mine else p.line())
        out += [line for line in found if line not in out]
    return out


def ensure_valid(config: dict, run_configs: dict[str, dict] | None = None, basedir: str | Path | None = None,
                 deep: bool = True) -> None:
    """:func:`check_runs`, raising :class:`ConfigError` that lists every problem (one per line)."""
    lines = check_runs(config, run_configs, basedir, deep)
    if lines:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


def _leaves(node: Any, prefix: str = ""):
    """``(dotted key, value)`` of every leaf of a nested mapping (an empty mapping is a leaf)."""
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], node


def effective_config(files: list[str | Path], replace: bool = False, base: str | Path | None = None,
                     schema: dict | None = None) -> tuple[dict, dict[str, str]]:
    """The config a Snakemake run gets from ``--configfile files`` (merged over ``base``, the
    workflow's config.yaml, unless ``replace``: ``--replace-workflow-config``), with the schema's
    defaults filled; and for every leaf key (dotted) the file that set it, or ``"default"``."""
    schema = schema if schema is not None else load_schema()
    paths = ([] if replace else [Path(base) if base else Path(__file__).resolve().parents[2] / "config.yaml"])
    paths += [Path(f) for f in files]
    merged: dict = {}
    sources: dict[str, str] = {}
    for path in paths:
        data = yaml.safe_load(path.read_text()) or {}
        merged = deep_merge(merged, data)
        for key, _ in _leaves(data):
            for old in [k for k in sources if k.startswith(key + ".")]:
                del sources[old]  # a whole mapping replaced by a scalar
            sources[key] = str(path)
    full = validate_config(copy.deepcopy(merged), schema)
    for key, _ in _leaves(full):
        if not any(key == k or key.startswith(k + ".") for k in sources):
            sources[key] = "default"
    return full, sources


def show_config(files: list[str | Path], replace: bool = False, base: str | Path | None = None) -> str:
    """One line per value of the effective config: ``key: value  # source``."""
    full, sources = effective_config(files, replace, base)
    lines = []
    for key, value in _leaves(full):
        src = sources.get(key) or next((v for k, v in sources.items() if key.startswith(k + ".")), "default")
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...")
        lines.append(f"{key}: {text}  # {src}")
    return "\n".join(lines) + "\n"


def validate_runs(config: dict, schema: dict | None = None) -> dict[str, dict]:
    """:func:`longmab.runs.resolve_runs`, each run's merged config validated against the schema
    (defaults filled).

    ``config`` itself must be valid already. A bad override is reported with its full key, e.g.
    ``config key 'runs.ablate.rollout.top_k': 0 is less than the minimum of 1``.

    Raises
    ------
    ConfigError
        Listing every problem of every run.
    """
    configs = resolve_runs(config)
    problems: list[str] = []
    if config.get("runs"):
        for name, merged in configs.items():
            problems += explain_errors(merged, schema, prefix=f"runs.{name}.")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return {name: validate_config(merged, schema) for name, merged in configs.items()}


def _drop_key(config: dict, dotted: str) -> None:
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        if not isinstance(node, dict) or part not in node:
            return
        node = node[part]
    if isinstance(node, dict):
        node.pop(last, None)


def _line_key(line: str) -> str:
    """The dotted key of a ``config key 'a.b': ...`` problem line ("" for any other line)."""
    return line.split("'", 2)[1] if line.startswith("config key '") else ""


def all_problems(config: dict, basedir: str | Path | None = None, deep: bool = True,
                 schema: dict | None = None) -> list[str]:
    """Every problem of ``config`` in one pass: the schema's (the config's and each run's
    overrides'), then the checks that need valid types (files, sample counts, contradictions), run
    on a copy without the keys the schema refused (their defaults instead), so that one config with
    four mistakes reports four lines, not one at a time. ``[]``: the config is good."""
    schema = schema if schema is not None else load_schema()
    lines = explain_errors(config, schema)
    try:
        configs = resolve_runs(config)
    except ConfigError as exc:
        return lines + [str(exc)]
    base_keys = {_line_key(ln) for ln in lines}
    if config.get("runs"):
        for name, merged in configs.items():
            prefix = f"runs.{name}."
            for ln in explain_errors(merged, schema, prefix=prefix):
                if _line_key(ln)[len(prefix):] not in base_keys and ln not in lines:  # the run's own override
                    lines.append(ln)
    bad = [key for key in map(_line_key, lines) if key]
    repaired = copy.deepcopy(config)
    for key in bad:
        _drop_key(repaired, key)
    try:
        repaired = validate_config(repaired, schema)
        run_configs = validate_runs(repaired, schema)
    except ConfigError:
        return lines  # the schema's problems hide the rest; they come first
    for line in check_runs(repaired, run_configs, basedir=basedir, deep=deep):
        key = _line_key(line)
        if line not in lines and not any(key == b or key.startswith(b + ".") for b in bad):
            lines.append(line)
    return lines

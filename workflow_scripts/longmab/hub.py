"""Models and benchmarks from the Hugging Face Hub, downloaded once into a shared cache.

The download rules (``rules/download.smk``) call this module once per hub model and per benchmark,
before any GPU job; every GPU job then reads a local folder named in a small *record* file and runs
with ``HF_HUB_OFFLINE=1`` (no job talks to the hub; 200 jobs do not download the same 16 GB).

Models
    :func:`download_model` runs ``huggingface_hub.snapshot_download`` at a revision (branch, tag or
    commit) into the hub cache (``models--org--name/snapshots/<commit>/``, the layout every HF
    library reads) and returns a record ``{repo_id, revision, commit, local_path, ...}``. The record
    pins the commit: a later ``main`` on the hub does not change a run that already downloaded.
    :func:`resolve_local` turns a record path into its snapshot folder (anything else passes through).

Benchmarks
    LongBench's ``data.zip`` (``THUDM/LongBench``; ``data/<name>.jsonl`` inside) and InfiniteBench's
    ``<name>.jsonl`` (``xinrongzhang2022/InfiniteBench``) are read as plain files with
    ``hf_hub_download`` (``datasets.load_dataset("THUDM/LongBench")`` needs a loading script, which
    datasets >= 4 no longer runs), every row checked with :mod:`longmab.benchmarks`, and written as
    the pipeline's JSONL (:func:`download_benchmark`).

Offline: with ``offline=True`` (or ``HF_HUB_OFFLINE=1``) the same functions resolve everything from the
cache without any network call, and fail with the path they looked in. The tests run exactly this
path against a cache pre-filled the way ``huggingface_hub`` fills it.

Tokens: gated repos (Llama) need a token; it is read from the environment variable named by
``hub.token_env`` (default ``HF_TOKEN``; else huggingface_hub's own login) and never written anywhere.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import write_json, write_text

#: Default source of each benchmark format: hub dataset, file in it, member inside an archive.
BENCHMARK_SOURCES: dict[str, dict[str, str | None]] = {
    "longbench": {"repo_id": "THUDM/LongBench", "file": "data.zip", "member": "data/{name}.jsonl"},
    "infinitebench": {"repo_id": "xinrongzhang2022/InfiniteBench", "file": "{name}.jsonl", "member": None},
}

#: Model files never needed (Llama's ``original/`` holds a second, 16 GB copy of the weights).
DEFAULT_IGNORE = ("original/*",)

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class HubError(RuntimeError):
    """A download or an offline resolution failed; the message names the repo, revision and cache."""


def is_hub_id(name: str) -> bool:
    """True for ``org/name`` that is not an existing local path (and not ``"embedded"``)."""
    text = os.fspath(name)
    return bool(_REPO_ID.match(text)) and not Path(text).expanduser().exists()


def record_name(repo_id: str, revision: str | None = None) -> str:
    """File-name-safe key of ``repo_id`` at ``revision``: ``meta-llama--Llama-3.1-8B-Instruct@main``."""
    rev = revision or "main"
    return f"{repo_id.replace('/', '--')}@{re.sub(r'[^A-Za-z0-9_.-]', '_', rev)}"


def cache_dir(configured: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The hub cache: ``configured`` (``hub.cache_dir``), else ``$HF_HUB_CACHE``, else
    ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub`` (huggingface_hub's own order)."""
    env = os.environ if environ is None else environ
    if configured:
        return Path(configured).expanduser().resolve()
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser().resolve()
    if env.get("HF_HOME"):
        return (Path(env["HF_HOME"]).expanduser() / "hub").resolve()
    return (Path("~/.cache/huggingface/hub").expanduser()).resolve()


def token_from_env(token_env: str | None = "HF_TOKEN", environ: Mapping[str, str] | None = None) -> str | None:
    """The token in ``$token_env`` (None: let huggingface_hub use its login or ``HF_TOKEN``)."""
    env = os.environ if environ is None else environ
    if not token_env:
        return None
    return env.get(token_env) or None


#: Set by :func:`job_environment` next to the HF_HUB_OFFLINE=1 it adds for the jobs: the download
#: rules (the only steps that must reach the hub) then still go online.
DOWNLOADS_ONLINE_VAR = "LONGMAB_DOWNLOADS_ONLINE"


def downloads_offline(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the download functions must stay offline: ``HF_HUB_OFFLINE`` (or
    ``TRANSFORMERS_OFFLINE``) set by the user, not by :func:`job_environment`."""
    env = os.environ if environ is None else environ
    if env.get(DOWNLOADS_ONLINE_VAR) == "1":
        return False
    value = env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _offline(offline: bool | None) -> bool:
    off = downloads_offline() if offline is None else bool(offline)
    from huggingface_hub import constants

    # huggingface_hub read HF_HUB_OFFLINE at import; a download step goes online when asked to.
    constants.HF_HUB_OFFLINE = off
    return off


def _commit_of(path: Path) -> str:
    """The commit of a file or folder inside ``<cache>/<kind>s--org--name/snapshots/<commit>/``."""
    for p in [path, *path.parents]:
        if p.parent.name == "snapshots":
            return p.name
    return ""


def _hub_call(what: str, repo_id: str, revision: str, cache: Path, offline: bool, fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001  # every hub error gets the same context
        how = "offline (HF_HUB_OFFLINE=1 / hub offline): only the cache was searched" if offline else "online"
        raise HubError(
            f"{what} {repo_id!r} at revision {revision!r} failed ({how}; cache {cache}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def download_model(
    repo_id: str,
    revision: str | None = None,
    *,
    cache: str | os.PathLike | None = None,
    token: str | None = None,
    offline: bool | None = None,
    ignore_patterns: Sequence[str] | None = DEFAULT_IGNORE,
) -> dict[str, Any]:
    """Download (or, offline, find) the snapshot of a hub model; return its record.

    Parameters
    ----------
    repo_id : str
        ``org/name`` on the hub.
    revision : str, optional
        Branch, tag or commit (None = ``main``). The record's ``commit`` is the resolved commit.
    cache : path, optional
        Hub cache folder (:func:`cache_dir` when None).
    token : str, optional
        Hub token for gated repos (never stored).
    offline : bool, optional
        Resolve from the cache only (None = ``HF_HUB_OFFLINE``).
    ignore_patterns : sequence of str
        Files not downloaded (default: Llama's duplicate ``original/`` weights).

    Returns
    -------
    dict
        ``{kind: "model", repo_id, revision, commit, local_path, cache_dir, files}``; ``files`` lists
        the snapshot's files (relative paths, sorted).

    Raises
    ------
    HubError
        Download failed, or offline and not in the cache, or the snapshot has no ``config.json``.
    """
    from huggingface_hub import snapshot_download

    rev = revision or "main"
    cache_path = cache_dir(cache)
    off = _offline(offline)
    path = Path(_hub_call("downloading model", repo_id, rev, cache_path, off, lambda: snapshot_download(
        repo_id, revision=rev, cache_dir=str(cache_path), token=token, local_files_only=off,
        ignore_patterns=list(ignore_patterns or []) or None)))
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    if "config.json" not in files:
        raise HubError(f"model {repo_id!r} at {rev!r}: no config.json in {path} (files: {files[:8]})")
    return {"kind": "model", "repo_id": repo_id, "revision": rev, "commit": _commit_of(path),
            "local_path": str(path), "cache_dir": str(cache_path), "files": files}


def write_record(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Write a download record (JSON), atomically."""
    write_json(path, dict(record))


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """Read a download record and check that its snapshot is still there.

    Raises
    ------
    HubError
        The file is not a record, or ``local_path`` no longer exists (the cache was cleaned: delete
        the record to download again).
    """
    path = Path(path)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HubError(f"{path}: not a readable download record ({exc})") from None
    if not isinstance(rec, dict) or "local_path" not in rec or "repo_id" not in rec:
        raise HubError(f"{path}: not a download record (needs repo_id and local_path)")
    if not Path(rec["local_path"]).exists():
        raise HubError(
            f"{path}: {rec['repo_id']} at {rec.get('revision')} should be in {rec['local_path']}, which is gone "
            "(hub cache cleaned?); delete the record to download it again"
        )
    return rec


def is_record(path: str | os.PathLike) -> bool:
    """True for an existing ``.json`` file (a download record; see :func:`read_record`)."""
    p = Path(os.fspath(path))
    return p.suffix == ".json" and p.is_file()


def resolve_local(name_or_record: str | os.PathLike) -> str:
    """The local folder a download record names; anything else (folder, hub id) unchanged."""
    if is_record(name_or_record):
        return read_record(name_or_record)["local_path"]
    return os.fspath(name_or_record)


# --------------------------------------------------------------------------------------------------
# benchmarks
# --------------------------------------------------------------------------------------------------


def benchmark_source(name: str, fmt: str, spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Where benchmark ``name`` of format ``fmt`` comes from: ``{repo_id, revision, file, member}``.

    ``spec`` is the config entry (``eval.benchmarks.<name>``); its ``hub`` (repo id, or ``true`` for
    the format's default repo), ``revision``, ``file`` and ``member`` override
    :data:`BENCHMARK_SOURCES` (``{name}`` in ``file`` / ``member`` becomes the benchmark name).
    """
    if fmt not in BENCHMARK_SOURCES:
        raise ValueError(f"benchmark {name!r}: no hub source for format {fmt!r} (known: {sorted(BENCHMARK_SOURCES)})")
    spec = dict(spec or {})
    base = BENCHMARK_SOURCES[fmt]
    hub = spec.get("hub")
    repo = base["repo_id"] if hub in (None, True) else str(hub)
    file = spec.get("file") or base["file"]
    member = spec.get("member", base["member"])
    return {"repo_id": repo, "revision": spec.get("revision") or "main", "file": str(file).format(name=name),
            "member": member.format(name=name) if member else None}


def _read_rows(raw: bytes, where: str) -> list[dict]:
    rows = []
    for lineno, line in enumerate(raw.decode("utf-8-sig").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise HubError(f"{where}:{lineno}: invalid JSON: {exc.msg}") from None
    return rows


def convert_benchmark_rows(rows: Sequence[dict], fmt: str, where: str) -> list[dict]:
    """Rows of a downloaded benchmark file in the pipeline's ``fmt`` layout (checked, in order).

    LongBench rows already are the ``longbench`` layout (``input, context, answers, length, dataset,
    _id``) and InfiniteBench rows the ``infinitebench`` one (``id, context, input, answer, options``):
    fields are kept as they are; every row must pass :func:`longmab.benchmarks.normalize_item` and
    ids must be unique. Raises :class:`~longmab.benchmarks.BenchmarkError` naming ``where:ROW``.
    """
    from .benchmarks import BenchmarkError, normalize_item

    out, seen = [], set()
    for i, row in enumerate(rows, start=1):
        item = normalize_item(row, fmt, f"{where}:{i}")
        if item["id"] in seen:
            raise BenchmarkError(f"{where}:{i}: duplicate id {item['id']!r}")
        seen.add(item["id"])
        out.append(dict(row))
    if not out:
        raise BenchmarkError(f"{where}: no items")
    return out


def download_benchmark(
    name: str,
    fmt: str,
    out_path: str | os.PathLike,
    spec: Mapping[str, Any] | None = None,
    *,
    cache: str | os.PathLike | None = None,
    token: str | None = None,
    offline: bool | None = None,
) -> dict[str, Any]:
    """Fetch benchmark ``name`` (format ``fmt``) from the hub and write it to ``out_path`` (JSONL).

    Returns the record ``{kind: "benchmark", name, format, repo_id, revision, commit, file, member,
    rows, sha256, path}`` (``sha256`` of the written file). Offline: from the cache only.

    Raises
    ------
    HubError
        The hub (or the cache, offline) has no such file / archive member.
    BenchmarkError
        A row is not in the ``fmt`` layout.
    """
    from huggingface_hub import hf_hub_download

    src = benchmark_source(name, fmt, spec)
    cache_path = cache_dir(cache)
    off = _offline(offline)
    local = Path(_hub_call(f"downloading benchmark file {src['file']} of", src["repo_id"], src["revision"],
                           cache_path, off, lambda: hf_hub_download(
        src["repo_id"], src["file"], repo_type="dataset", revision=src["revision"], cache_dir=str(cache_path),
        token=token, local_files_only=off)))
    where = f"{src['repo_id']}/{src['file']}"
    if src["member"]:
        with zipfile.ZipFile(local) as zf:
            try:
                raw = zf.read(src["member"])
            except KeyError:
                names = [n for n in zf.namelist() if n.endswith(".jsonl")]
                raise HubError(f"{where} ({local}): no member {src['member']!r} (has e.g. {names[:6]})") from None
        where += f"!{src['member']}"
    else:
        raw = local.read_bytes()
    rows = convert_benchmark_rows(_read_rows(raw, where), fmt, where)
    buf = io.StringIO()
    for row in rows:
        buf.write(json.dumps(row, ensure_ascii=False) + "\n")
    text = buf.getvalue()
    write_text(out_path, text)
    return {"kind": "benchmark", "name": name, "format": fmt, "repo_id": src["repo_id"],
            "revision": src["revision"], "commit": _commit_of(local),
            "file": src["file"], "member": src["member"], "rows": len(rows),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "path": os.fspath(out_path),
            "cache_dir": str(cache_path)}


# --------------------------------------------------------------------------------------------------
# the download plan of a config (what rules/download.smk runs)
# --------------------------------------------------------------------------------------------------

#: Where the download rules put the model records (``results/download/models/<key>.json``).
DOWNLOAD_DIR = "results/download"


def model_record_path(name: str, revision: str | None = None, download_dir: str = DOWNLOAD_DIR) -> str | None:
    """The download record of model ``name`` when it is a hub id; None for ``"embedded"`` or a local
    folder (those need no download)."""
    if name == "embedded" or not is_hub_id(name):
        return None
    return f"{download_dir}/models/{record_name(name, revision)}.json"


@dataclass
class DownloadPlan:
    """Every hub download one config needs.

    Attributes
    ----------
    models : dict
        record key (:func:`record_name`) -> ``{repo_id, revision, role}`` (role: policy / embedder).
    benchmarks : dict
        benchmark file path -> ``{name, format, spec}`` for every ``eval.benchmarks`` entry with ``hub``.
    policy_record, embedder_record : str or None
        The record a job needing that model takes as input (None: embedded or a local folder).
    eval_records : dict
        External evaluation row name (``eval.models`` entry) -> its model's record (hub ids only).
    mbr_records : dict
        SeaLong MBR embedder (``pairs.sealong.mbr_embedder``, hub ids only) -> its record.
    """

    models: dict[str, dict[str, str]] = field(default_factory=dict)
    benchmarks: dict[str, dict[str, Any]] = field(default_factory=dict)
    policy_record: str | None = None
    embedder_record: str | None = None
    eval_records: dict[str, str] = field(default_factory=dict)
    mbr_records: dict[str, str] = field(default_factory=dict)
    download_dir: str = DOWNLOAD_DIR

    @property
    def targets(self) -> list[str]:
        """Every output of the download rules (model records, benchmark files)."""
        return [f"{self.download_dir}/models/{k}.json" for k in self.models] + list(self.benchmarks)

    def model_pattern(self) -> str:
        """A regex matching exactly the record keys (nothing when there are none)."""
        return _alternatives(self.models)

    def benchmark_pattern(self) -> str:
        """A regex matching exactly the benchmark paths (nothing when there are none)."""
        return _alternatives(self.benchmarks)


def _alternatives(values) -> str:
    return "|".join(re.escape(v) for v in values) or r"(?!x)x"


def download_plan(config: Mapping[str, Any], download_dir: str = DOWNLOAD_DIR) -> DownloadPlan:
    """The :class:`DownloadPlan` of a config (missing sections read as their defaults)."""
    models = config.get("models", {}) or {}
    plan = DownloadPlan(download_dir=download_dir)

    def add(name: str | None, revision: str | None, role: str) -> str | None:
        """Plan the download of ``name`` when it is a hub id; its record path (else None)."""
        rec = model_record_path(name, revision, download_dir) if name else None
        if rec:
            rev = revision or "main"
            plan.models[record_name(name, rev)] = {"repo_id": name, "revision": rev, "role": role}
        return rec

    for role, name_key, rev_key in (("policy", "policy", "revision"), ("embedder", "embedder", "embedder_revision")):
        rec = add(models.get(name_key, "embedded"), models.get(rev_key), role)
        if rec:
            setattr(plan, f"{role}_record", rec)
    sealong = ((config.get("pairs", {}) or {}).get("sealong", {}) or {})
    runs = [sealong] + [((o or {}).get("pairs", {}) or {}).get("sealong", {}) or {}
                        for o in (config.get("runs") or {}).values()]
    for s in runs:  # SeaLong's own MBR embedder (pairs.sealong.mbr_embedder), per run
        rec = add(s.get("mbr_embedder"), s.get("mbr_embedder_revision"), "mbr_embedder")
        if rec:
            plan.mbr_records[s["mbr_embedder"]] = rec
    for entry in (config.get("eval", {}) or {}).get("models", []) or []:
        if isinstance(entry, Mapping):  # an external evaluation row (e.g. a released checkpoint)
            rec = add(entry["model"], entry.get("revision"), "eval")
            if rec:
                plan.eval_records[entry["name"]] = rec
    for name, spec in ((config.get("eval", {}) or {}).get("benchmarks", {}) or {}).items():
        if spec.get("hub"):
            plan.benchmarks[spec["path"]] = {
                "name": name, "format": spec["format"],
                "spec": {k: spec[k] for k in ("hub", "revision", "file", "member") if spec.get(k) is not None}}
    return plan


# --------------------------------------------------------------------------------------------------
# the jobs' environment
# --------------------------------------------------------------------------------------------------


def job_environment(hub: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for every pipeline job once the download rules ran: the models are local folders,
    so jobs run offline (``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``, ``HF_DATASETS_OFFLINE=1``);
    ``HF_HUB_CACHE`` points at the shared cache (``hub.cache_dir``) so remote code and tokenizers
    resolve there. Values already set in ``environ`` win (a user may need a job online)."""
    env = os.environ if environ is None else environ
    want = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if hub and hub.get("cache_dir"):
        want["HF_HUB_CACHE"] = str(cache_dir(hub["cache_dir"]))
    out = {k: v for k, v in want.items() if k not in env}
    if "HF_HUB_OFFLINE" in out or env.get(DOWNLOADS_ONLINE_VAR) == "1":
        out[DOWNLOADS_ONLINE_VAR] = "1"  # offline because of us, not the user: downloads stay online
    return out


__all__ = [
    "BENCHMARK_SOURCES",
    "DEFAULT_IGNORE",
    "DOWNLOADS_ONLINE_VAR",
    "DOWNLOAD_DIR",
    "DownloadPlan",
    "HubError",
    "benchmark_source",
    "cache_dir",
    "convert_benchmark_rows",
    "download_benchmark",
    "download_model",
    "download_plan",
    "downloads_offline",
    "is_hub_id",
    "is_record",
    "job_environment",
    "model_record_path",
    "read_record",
    "record_name",
    "resolve_local",
    "token_from_env",
    "write_record",
]

"""Provenance: what produced an output (code version, git commit, model fingerprint, settings hash).

Used in two places:

- by the workflow at parse time, to name outputs by what determines them (:func:`settings_hash`) and
  to re-run a stage when the library code it runs changes (:func:`code_hash`, a rule ``params:``
  value, so Snakemake's params re-run trigger fires);
- by the jobs, to record in every metrics file and table row the pipeline's git commit
  (:func:`git_commit`) and a fingerprint of the evaluated model (:func:`model_fingerprint`).

Nothing here imports Snakemake, torch or the network.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PACKAGE = "longmab"
PACKAGE_DIR = Path(__file__).resolve().parent


# --------------------------------------------------------------------------------------------------
# Settings


def canonical_json(value: Any) -> str:
    """Sorted-key, compact JSON of plain values (the bytes every settings hash is taken over)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def settings_hash(value: Any, length: int = 8) -> str:
    """First ``length`` hex digits of the SHA-256 of :func:`canonical_json` of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:length]


# --------------------------------------------------------------------------------------------------
# Code version of a stage


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Remove module / class / function docstrings (documentation edits do not change behaviour)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", None)
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _module_file(module: str, package_dir: Path) -> Path | None:
    """The source file of ``longmab.x.y`` inside ``package_dir`` (``None`` if it is not ours)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, package_dir: Path) -> str:
    rel = path.relative_to(package_dir).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(tree: ast.AST, current: str | None, is_package: bool) -> list[str]:
    """Absolute names of the modules ``tree`` imports (``from .x import y`` resolved against ``current``;
    ``from pkg import name`` also yields ``pkg.name``, which may be a submodule)."""
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if current is None:
                    continue
                base = current.split(".") if is_package else current.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append(mod)
            out.extend(f"{mod}.{alias.name}" for alias in node.names)
    return out


def module_closure(script: str | os.PathLike, package_dir: str | os.PathLike = PACKAGE_DIR) -> list[Path]:
    """The files of our package that ``script`` imports, directly or through other modules of ours.

    Parameters
    ----------
    script : path
        A rule script (``workflow_scripts/probe.py``) or a module of the package.
    package_dir : path
        The ``longmab`` package folder whose modules count.

    Returns
    -------
    list of Path
        ``script`` itself first, then the package modules it reaches, sorted by path. Every parent
        package's ``__init__.py`` counts too (Python runs it on import).
    """
    package_dir = Path(package_dir).resolve()
    script = Path(script).resolve()
    seen: dict[Path, None] = {}
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen[path] = None
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        inside = package_dir in path.parents
        current = _module_name(path, package_dir) if inside else None
        for name in _imports(tree, current, path.name == "__init__.py"):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # longmab, longmab.stages, longmab.stages.probe
                found = _module_file(".".join(parts[:i]), package_dir)
                if found is not None and found not in seen:
                    todo.append(found)
    rest = sorted(p for p in seen if p != script)
    return [script, *rest]


def code_hash(script: str | os.PathLike, package_dir: str | os.PathLike = PACKAGE_DIR, length: int = 12,
              follow_imports: bool = True) -> str:
    """A version of the code a rule script runs: the hash of its module closure's syntax trees.

    Comments, blank lines, formatting and docstrings do not change it (the trees are compared, not
    the text); any change to a statement, a default or a constant does. Put it in a rule's
    ``params:`` so that editing the library code a stage runs re-runs that stage (and, through its
    changed outputs, what follows), but not the stages before it. ``follow_imports=False`` hashes
    the one file only.
    """
    package_dir = Path(package_dir).resolve()
    h = hashlib.sha256()
    files = module_closure(script, package_dir) if follow_imports else [Path(script).resolve()]
    for path in files:
        name = _module_name(path, package_dir) if package_dir in path.parents else path.name
        tree = _strip_docstrings(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        h.update(name.encode() + b"\0" + ast.dump(tree, annotate_fields=False).encode() + b"\0")
    return h.hexdigest()[:length]


# --------------------------------------------------------------------------------------------------
# Git commit of the workflow


def git_commit(path: str | os.PathLike) -> str:
    """The commit checked out in the git work tree containing ``path`` ("unknown" outside one).

    Reads ``.git`` directly (HEAD, loose refs, packed-refs), so it needs no ``git`` binary (HPC conda
    environments often lack one). Local modifications are not detected: see :func:`code_hash` for
    the version of the code a stage actually ran.
    """
    here = Path(path).resolve()
    for folder in [here, *here.parents]:
        dotgit = folder / ".git"
        if dotgit.is_file():  # a worktree / submodule: "gitdir: <path>"
            text = dotgit.read_text(encoding="utf-8").strip()
            if text.startswith("gitdir:"):
                dotgit = (folder / text.split(":", 1)[1].strip()).resolve()
        if dotgit.is_dir():
            return _resolve_head(dotgit)
    return "unknown"


def _resolve_head(gitdir: Path) -> str:
    try:
        head = (gitdir / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"
    if not head.startswith("ref:"):
        return head
    ref = head.split(":", 1)[1].strip()
    common = gitdir
    if (gitdir / "commondir").is_file():
        common = (gitdir / (gitdir / "commondir").read_text(encoding="utf-8").strip()).resolve()
    for base in (gitdir, common):
        loose = base / ref
        if loose.is_file():
            return loose.read_text(encoding="utf-8").strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(encoding="utf-8").splitlines():
            if line.endswith(" " + ref):
                return line.split(" ", 1)[0]
    return "unknown"


_SHA256: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike) -> str | None:
    """SHA-256 of a file's bytes (cached per path, size and mtime; None for a missing file): names
    the folders of a ready-made preference file's run and records an external row's chat template."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _SHA256[key] = h.hexdigest()
    return _SHA256[key]


# --------------------------------------------------------------------------------------------------
# Model fingerprint

#: Files up to this size are hashed whole; larger ones by size + first and last MiB.
_WHOLE_FILE_LIMIT = 64 << 20
_EDGE = 1 << 20


def _file_digest(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        if size <= _WHOLE_FILE_LIMIT:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(fh.read(_EDGE))
            fh.seek(size - _EDGE)
            h.update(fh.read(_EDGE))
    return h.hexdigest()


def model_fingerprint(path: str | os.PathLike) -> str | None:
    """A cheap content fingerprint of a local model folder (``None`` for a hub id / missing folder).

    SHA-256 over every file's relative path and digest; files over 64 MiB contribute their size and
    their first and last MiB (weights of a 7-8 B model are hashed in seconds, not minutes). Two
    folders with the same fingerprint hold the same model for every practical purpose; the
    fingerprint is recorded beside metrics, not used for naming.
    """
    root = Path(path)
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if any(part.startswith(".") for part in f.relative_to(root).parts):
            continue
        h.update(rel.encode() + b"\0" + _file_digest(f).encode() + b"\0")
    return h.hexdigest()[:16]


def describe_model(name_or_path: str, revision: str | None = None) -> dict:
    """``{"model": <path or hub id>, "revision": ..., "fingerprint": ...}`` for provenance records."""
    return {"model": str(name_or_path), "revision": revision, "fingerprint": model_fingerprint(name_or_path)}


def provenance_record(
    *,
    run: str | Iterable[str],
    model: Mapping,
    settings: Mapping,
    seed: int,
    workflow_dir: str | os.PathLike,
    code: str | None = None,
    tag: str | None = None,
) -> dict:
    """The provenance block written beside a metrics row (plain JSON).

    Parameters
    ----------
    run : str or iterable of str
        The run name(s) this output belongs to ("base" for the untrained policy).
    model : mapping
        :func:`describe_model` of the evaluated model.
    settings : mapping
        The config values that determined the output (the stage's determinants, with its upstream
        chain), as the workflow planned them.
    seed : int
        The base seed.
    workflow_dir : path
        The workflow folder (its git commit is recorded).
    code, tag : str, optional
        The stage's :func:`code_hash` and its output tag (folder name).
    """
    runs = [run] if isinstance(run, str) else sorted(run)
    return {
        "runs": runs,
        "tag": tag,
        "model": dict(model),
        "settings": dict(settings),
        "settings_sha": settings_hash(settings, 16),
        "seed": int(seed),
        "git_commit": git_commit(workflow_dir),
        "code": code,
    }

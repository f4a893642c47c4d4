"""Provenance: code versions that ignore docs but not behaviour, git commits without git, fingerprints."""

import subprocess
from pathlib import Path

from longmab.provenance import code_hash, git_commit, model_fingerprint, module_closure, settings_hash

REPO = Path(__file__).resolve().parents[2]


def make_pkg(root: Path) -> Path:
    pkg = root / "longmab"
    (pkg / "stages").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "stages" / "__init__.py").write_text("")
    (pkg / "metrics.py").write_text('"""Doc."""\n\ndef f(x):\n    return x + 1\n')
    (pkg / "bandit.py").write_text("K = 1\n")
    (pkg / "stages" / "probe.py").write_text("from ..metrics import f\n")
    (pkg / "stages" / "rollout.py").write_text("from ..metrics import f\nfrom ..bandit import K\n")
    (root / "probe.py").write_text("from longmab.stages.probe import *\n")
    (root / "rollout.py").write_text("from longmab.stages import rollout\n")
    return pkg


def test_closure_follows_relative_and_absolute_imports(tmp_path):
    pkg = make_pkg(tmp_path)
    names = {p.name for p in module_closure(tmp_path / "rollout.py", pkg)}
    assert names == {"rollout.py", "__init__.py", "metrics.py", "bandit.py"}
    assert "bandit.py" not in {p.name for p in module_closure(tmp_path / "probe.py", pkg)}


def test_code_hash_ignores_docs_and_comments_but_not_code(tmp_path):
    pkg = make_pkg(tmp_path)
    probe0, rollout0 = code_hash(tmp_path / "probe.py", pkg), code_hash(tmp_path / "rollout.py", pkg)
    (pkg / "metrics.py").write_text('"""Other doc."""\n\n# a comment\ndef f(x):\n\n    return x + 1  # same\n')
    assert code_hash(tmp_path / "probe.py", pkg) == probe0
    (pkg / "bandit.py").write_text("K = 2\n")  # only the rollout uses the bandit
    assert code_hash(tmp_path / "probe.py", pkg) == probe0
    assert code_hash(tmp_path / "rollout.py", pkg) != rollout0
    (pkg / "metrics.py").write_text("def f(x):\n    return x + 2\n")
    assert code_hash(tmp_path / "probe.py", pkg) != probe0


def test_real_scripts_have_distinct_closures():
    scripts = REPO / "workflow_scripts"
    probe = {p.name for p in module_closure(scripts / "probe.py")}
    rollout = {p.name for p in module_closure(scripts / "rollout.py")}
    assert "chunking.py" in probe and "bandit.py" not in probe and "bandit.py" in rollout


def test_git_commit_without_git_binary(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("x")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "-C", str(tmp_path), "add", "f"], check=True, env=env)
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-qm", "m"], check=True, env=env)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    assert git_commit(tmp_path / "f") == head
    subprocess.run(["git", "-C", str(tmp_path), "pack-refs", "--all"], check=True)
    assert git_commit(tmp_path) == head  # from packed-refs
    assert git_commit("/") == "unknown"


def test_fingerprint_and_settings_hash(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    a = model_fingerprint(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"x": 1}')
    assert a and model_fingerprint(tmp_path / "m") != a
    assert model_fingerprint("org/hub-id") is None
    assert settings_hash({"a": 1, "b": 2}) == settings_hash({"b": 2, "a": 1}) != settings_hash({"a": 2, "b": 2})

"""Hub downloads (longmab.hub, rules/download.smk) run offline against a hub cache pre-filled exactly as
huggingface_hub fills it (``models--org--name/{blobs,snapshots/<commit>,refs/main}``, snapshot files
as relative symlinks to content-addressed blobs): the same code that downloads on a login node
resolves here without network, with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from longmab import hub
from longmab.benchmarks import BenchmarkError, load_benchmark

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_cache(cache: Path, repo_id: str, files: dict[str, bytes], *, repo_type: str = "model",
               commit: str = COMMIT, ref: str | None = "main") -> Path:
    """Lay ``files`` out as huggingface_hub does; returns the snapshot folder."""
    root = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snap = root / "snapshots" / commit
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture(scope="module")
def tiny_model_files(tmp_path_factory) -> dict[str, bytes]:
    """A real (tiny, random-weight) Llama model folder with the embedded tokenizer when present."""
    from longmab.gpucheck import build_tiny_llama

    d = build_tiny_llama(tmp_path_factory.mktemp("tiny") / "m", seed=0)
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(hub.DOWNLOADS_ONLINE_VAR, raising=False)


def longbench_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("data/musique.jsonl", (FIXTURES / "longbench_small.jsonl").read_bytes())
        zf.writestr("data/2wikimqa.jsonl", (FIXTURES / "longbench_small.jsonl").read_bytes())
    return buf.getvalue()


# --- names, cache location, environment ------------------------------------------------------------


def test_is_hub_id_and_record_name(tmp_path, monkeypatch):
    assert hub.is_hub_id("meta-llama/Llama-3.1-8B-Instruct")
    assert not hub.is_hub_id("embedded") and not hub.is_hub_id("/shared/models/x") and not hub.is_hub_id("a/b/c")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "local").mkdir(parents=True)
    assert not hub.is_hub_id("org/local"), "an existing folder is a local model, not a hub id"
    assert hub.record_name("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama--Llama-3.1-8B-Instruct@main"
    assert hub.record_name("Qwen/Qwen2.5-7B-Instruct", "refs/pr/1") == "Qwen--Qwen2.5-7B-Instruct@refs_pr_1"


def test_cache_dir_order(tmp_path):
    assert hub.cache_dir(tmp_path / "c", {"HF_HUB_CACHE": "/x"}) == (tmp_path / "c").resolve()
    assert hub.cache_dir(None, {"HF_HUB_CACHE": str(tmp_path / "h"), "HF_HOME": "/y"}) == (tmp_path / "h").resolve()
    assert hub.cache_dir(None, {"HF_HOME": str(tmp_path)}) == (tmp_path / "hub").resolve()
    assert hub.cache_dir(None, {}) == Path("~/.cache/huggingface/hub").expanduser().resolve()


def test_job_environment_and_downloads_stay_online():
    env = hub.job_environment({"cache_dir": "/shared/hf"}, {})
    assert env == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                   "HF_HUB_CACHE": "/shared/hf", hub.DOWNLOADS_ONLINE_VAR: "1"}
    assert hub.downloads_offline(env) is False, "offline jobs, but the download rules go online"
    user = {"HF_HUB_OFFLINE": "1"}
    assert hub.DOWNLOADS_ONLINE_VAR not in hub.job_environment(None, user)
    assert hub.downloads_offline(user) is True, "the user's own HF_HUB_OFFLINE=1 keeps downloads offline"
    assert hub.job_environment(None, {"HF_HUB_OFFLINE": "0"}).get("HF_HUB_OFFLINE") is None  # the user wins
    assert hub.downloads_offline({}) is False


def test_token_from_env():
    assert hub.token_from_env("MY_TOKEN", {"MY_TOKEN": "hf_x"}) == "hf_x"
    assert hub.token_from_env("MY_TOKEN", {}) is None and hub.token_from_env(None, {"HF_TOKEN": "x"}) is None


# --- models ---------------------------------------------------------------------------------------------


def test_download_model_offline_from_a_prefilled_cache(tmp_path, tiny_model_files, offline):
    cache = tmp_path / "hub"
    snap = fill_cache(cache, "org/tiny-llama", {**tiny_model_files, "original/consolidated.00.pth": b"x"})
    rec = hub.download_model("org/tiny-llama", None, cache=cache)
    assert rec["commit"] == COMMIT and rec["revision"] == "main"
    assert Path(rec["local_path"]) == snap and rec["cache_dir"] == str(cache.resolve())
    assert "config.json" in rec["files"] and "tokenizer.json" in rec["files"]
    # a pinned commit resolves without refs/
    assert hub.download_model("org/tiny-llama", COMMIT, cache=cache)["local_path"] == str(snap)


def test_the_record_is_what_a_gpu_job_loads(tmp_path, tiny_model_files, offline):
    """record -> engine: make_engine resolves the record to the snapshot and generates offline."""
    from longmab.engines import SamplingConfig, make_engine

    cache = tmp_path / "hub"
    snap = fill_cache(cache, "org/tiny-llama", tiny_model_files)
    rec_path = tmp_path / "results" / "download" / "models" / f"{hub.record_name('org/tiny-llama')}.json"
    hub.write_record(rec_path, hub.download_model("org/tiny-llama", cache=cache))
    assert hub.resolve_local(rec_path) == str(snap)
    assert hub.resolve_local("org/tiny-llama") == "org/tiny-llama"  # not a record: unchanged
    eng = make_engine("transformers", str(rec_path), dtype="float32", max_model_len=256, seed=0)
    try:
        out = eng.generate([[{"role": "user", "content": "hi"}]], SamplingConfig(temperature=0.0, max_tokens=4), [0])
        assert len(out) == 1 and isinstance(out[0], str)
        assert Path(eng.model.name_or_path).resolve() == snap.resolve()
    finally:
        eng.close()


def test_offline_miss_names_repo_revision_and_cache(tmp_path, tiny_model_files, offline):
    cache = tmp_path / "hub"
    fill_cache(cache, "org/tiny-llama", tiny_model_files)
    with pytest.raises(hub.HubError) as err:
        hub.download_model("org/absent", "main", cache=cache)
    msg = str(err.value)
    assert "'org/absent'" in msg and "'main'" in msg and str(cache.resolve()) in msg and "offline" in msg
    with pytest.raises(hub.HubError, match="'v9'"):
        hub.download_model("org/tiny-llama", "v9", cache=cache)


def test_snapshot_without_config_is_refused(tmp_path, offline):
    cache = tmp_path / "hub"
    fill_cache(cache, "org/partial", {"tokenizer.json": b"{}"})
    with pytest.raises(hub.HubError, match="no config.json"):
        hub.download_model("org/partial", cache=cache)


def test_read_record_checks_the_snapshot(tmp_path, tiny_model_files, offline):
    cache = tmp_path / "hub"
    snap = fill_cache(cache, "org/tiny-llama", tiny_model_files)
    rec_path = tmp_path / "r.json"
    hub.write_record(rec_path, hub.download_model("org/tiny-llama", cache=cache))
    assert hub.read_record(rec_path)["commit"] == COMMIT
    for f in snap.iterdir():
        f.unlink()
    snap.rmdir()
    with pytest.raises(hub.HubError, match="which is gone"):
        hub.read_record(rec_path)
    (tmp_path / "bad.json").write_text('{"a": 1}')
    with pytest.raises(hub.HubError, match="not a download record"):
        hub.read_record(tmp_path / "bad.json")


# --- benchmarks -----------------------------------------------------------------------------------------


def test_benchmark_source_defaults_and_overrides():
    assert hub.benchmark_source("musique", "longbench", {"hub": True}) == {
        "repo_id": "THUDM/LongBench", "revision": "main", "file": "data.zip", "member": "data/musique.jsonl"}
    assert hub.benchmark_source("longbook_qa_eng", "infinitebench", {"hub": True, "revision": "abc"}) == {
        "repo_id": "xinrongzhang2022/InfiniteBench", "revision": "abc", "file": "longbook_qa_eng.jsonl", "member": None}
    src = hub.benchmark_source("mq", "longbench", {"hub": "zai-org/LongBench", "member": "data/musique.jsonl"})
    assert (src["repo_id"], src["member"]) == ("zai-org/LongBench", "data/musique.jsonl")
    with pytest.raises(ValueError, match="no hub source"):
        hub.benchmark_source("x", "csv")


def test_longbench_from_the_data_archive_offline(tmp_path, offline):
    cache = tmp_path / "hub"
    fill_cache(cache, "THUDM/LongBench", {"data.zip": longbench_zip()}, repo_type="dataset")
    out = tmp_path / "data" / "test_data" / "musique.jsonl"
    rec = hub.download_benchmark("musique", "longbench", out, {"hub": True}, cache=cache)
    assert rec["rows"] == 3 and rec["commit"] == COMMIT and rec["member"] == "data/musique.jsonl"
    assert rec["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    ours = load_benchmark(out, "longbench")
    theirs = load_benchmark(FIXTURES / "longbench_small.jsonl", "longbench")
    assert ours == theirs, "the converted file reads exactly as the original rows"
    with pytest.raises(hub.HubError, match="no member 'data/narrativeqa.jsonl'"):
        hub.download_benchmark("narrativeqa", "longbench", tmp_path / "n.jsonl", {"hub": True}, cache=cache)


def test_infinitebench_file_offline(tmp_path, offline):
    cache = tmp_path / "hub"
    raw = (FIXTURES / "infinitebench_small.jsonl").read_bytes()
    fill_cache(cache, "xinrongzhang2022/InfiniteBench", {"longbook_qa_eng.jsonl": raw}, repo_type="dataset")
    out = tmp_path / "longbook_qa_eng.jsonl"
    rec = hub.download_benchmark("longbook_qa_eng", "infinitebench", out, {"hub": True}, cache=cache)
    assert rec["rows"] == 2 and rec["file"] == "longbook_qa_eng.jsonl"
    assert load_benchmark(out, "infinitebench") == load_benchmark(FIXTURES / "infinitebench_small.jsonl", "infinitebench")


def test_a_bad_benchmark_row_names_the_source(tmp_path, offline):
    cache = tmp_path / "hub"
    rows = b'{"id": 1, "input": "q", "context": "c", "answer": ["a"]}\n{"id": 2, "input": "q", "context": "c"}\n'
    fill_cache(cache, "xinrongzhang2022/InfiniteBench", {"longbook_qa_eng.jsonl": rows}, repo_type="dataset")
    with pytest.raises(BenchmarkError, match=r"InfiniteBench/longbook_qa_eng.jsonl:2: missing field 'answer'"):
        hub.download_benchmark("longbook_qa_eng", "infinitebench", tmp_path / "o.jsonl", {"hub": True}, cache=cache)
    assert not (tmp_path / "o.jsonl").exists()


# --- the rules, through Snakemake, offline ------------------------------------------------------------------


def test_download_rules_offline_through_snakemake(tmp_path, tiny_model_files):
    """rules/download.smk on its own: `snakemake download` fills the records and the benchmark files
    from the pre-filled cache with HF_HUB_OFFLINE=1, and a second run has nothing to do."""
    cache = tmp_path / "hub"
    snap = fill_cache(cache, "org/tiny-llama", tiny_model_files)
    fill_cache(cache, "THUDM/LongBench", {"data.zip": longbench_zip()}, repo_type="dataset")
    fill_cache(cache, "xinrongzhang2022/InfiniteBench",
               {"longbook_qa_eng.jsonl": (FIXTURES / "infinitebench_small.jsonl").read_bytes()}, repo_type="dataset")
    wd = tmp_path / "wf"
    wd.mkdir()
    config = {
        "models": {"policy": "org/tiny-llama", "revision": None, "embedder": "embedded"},
        "hub": {"cache_dir": str(cache), "token_env": "HF_TOKEN", "ignore_patterns": ["original/*"]},
        "eval": {"benchmarks": {
            "musique": {"path": "data/test_data/musique.jsonl", "format": "longbench", "hub": True},
            "longbook_qa_eng": {"path": "data/test_data/longbook_qa_eng.jsonl", "format": "infinitebench", "hub": True},
            "local": {"path": "data/local.jsonl", "format": "longbench"},
        }},
    }
    (wd / "config.json").write_text(json.dumps(config))
    (wd / "Snakefile").write_text(
        f"import sys\nsys.path.insert(0, {str(REPO / 'workflow_scripts')!r})\n"
        'configfile: "config.json"\n'
        f"include: {str(REPO / 'rules' / 'download.smk')!r}\n"
        "rule check:\n    input: DOWNLOADS.policy_record\n    output: 'ok'\n    shell: 'cp {input} {output}'\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop(hub.DOWNLOADS_ONLINE_VAR, None)
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--cores", "1", "download", "check"]
    proc = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    rec = json.loads((wd / "results/download/models/org--tiny-llama@main.json").read_text())
    assert rec["local_path"] == str(snap) and rec["commit"] == COMMIT
    assert json.loads((wd / "ok").read_text()) == rec, "DOWNLOADS.policy_record is the record's path"
    assert len(load_benchmark(wd / "data/test_data/musique.jsonl", "longbench")) == 3
    assert json.loads((wd / "data/test_data/longbook_qa_eng.jsonl.source.json").read_text())["rows"] == 2
    assert not (wd / "data/local.jsonl").exists(), "a benchmark without hub: is not downloaded"
    again = subprocess.run([*cmd, "-n"], cwd=wd, env=env, capture_output=True, text=True, timeout=600)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_download_plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "local").mkdir(parents=True)
    plan = hub.download_plan({
        "models": {"policy": "meta-llama/Llama-3.1-8B-Instruct", "revision": "abc123", "embedder": "models/local"},
        "eval": {"benchmarks": {"musique": {"path": "data/m.jsonl", "format": "longbench", "hub": True, "revision": None},
                                "mine": {"path": "data/x.jsonl", "format": "infinitebench"}}},
    })
    assert plan.policy_record == "results/download/models/meta-llama--Llama-3.1-8B-Instruct@abc123.json"
    assert plan.embedder_record is None, "a local folder needs no download"
    assert plan.models == {"meta-llama--Llama-3.1-8B-Instruct@abc123": {
        "repo_id": "meta-llama/Llama-3.1-8B-Instruct", "revision": "abc123", "role": "policy"}}
    assert plan.benchmarks == {"data/m.jsonl": {"name": "musique", "format": "longbench", "spec": {"hub": True}}}
    assert plan.targets == [plan.policy_record, "data/m.jsonl"]
    import re

    assert re.fullmatch(plan.benchmark_pattern(), "data/m.jsonl") and not re.fullmatch(plan.benchmark_pattern(), "data/x.jsonl")
    empty = hub.download_plan({"models": {"policy": "embedded", "embedder": "embedded"}})
    assert empty.targets == [] and not re.fullmatch(empty.model_pattern(), "anything")

"""Incremental re-runs: after a one-key change, `snakemake -n` plans exactly the jobs that key affects.

Each test dry-runs a private copy of the completed tiny run (outputs, .snakemake/ metadata and mtimes
preserved) with the default --rerun-triggers. "X and everything downstream of it" is what
`snakemake -n --forcerun X` plans on the same copy, so the expectations follow the DAG as it grows
(e.g. a training-side change re-evaluates the trained model, not the base model).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import run_snakemake
from dryrun import dry_run_counts

pytestmark = pytest.mark.slow

EVAL_SIDE = re.compile(r"^(eval|tables?|plot_benchmarks|report)")


def _link_or_copy(src: str, dst: str) -> str:
    """Hard-link big files (only read here; same inode = same mtime), copy the rest with mtimes."""
    if os.path.getsize(src) > (1 << 20):
        try:
            os.link(src, dst)
            return dst
        except OSError:
            pass
    return shutil.copy2(src, dst)


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(tiny_run, dest, symlinks=True, copy_function=_link_or_copy)
    return dest


def planned(workdir: Path, change: dict | None = None, *args: str) -> dict[str, int]:
    """Rule -> job count that a dry run plans, after merging ``change`` over the tiny config."""
    files = ["tiny.yaml"]
    if change:
        (workdir / "change.yaml").write_text(json.dumps(change))  # JSON is YAML
        files.append("change.yaml")
    return dry_run_counts(run_snakemake(workdir, "-n", *args, "--configfile", *files))


def downstream_of(workdir: Path, rule: str) -> dict[str, int]:
    return planned(workdir, None, "--forcerun", rule)


def with_manifest(counts: dict[str, int]) -> dict[str, int]:
    """What a config change plans beyond `--forcerun` of the same stage: the renamed folders are
    new, so the run manifest (results/runs/*.json) is rewritten and every DPO job that trains into a
    new folder gets its LLaMA-Factory yaml files written there first."""
    extra = {"run_manifest": 1}
    if counts.get("dpo_train"):
        extra.update(dpo_config=counts["dpo_train"], dpo_export_config=counts["dpo_train"])
    return {**counts, **extra}


def test_no_change_nothing_to_do(run_copy):
    assert planned(run_copy) == {}


@pytest.mark.parametrize("knob", [{"engine": {"mode": "server"}}, {"engine": {"cpu_cores": 2}},
                                  {"rollout": {"schedule": "sync"}},
                                  {"engine": {"vllm": {"max_num_seqs": 8}}}])
def test_a_speed_knob_reruns_nothing(run_copy, knob):
    assert planned(run_copy, knob) == {}


@pytest.mark.parametrize("change", [{"max_tokens": 17}, {"backend": "transformers"}])
def test_eval_key_reruns_only_eval_side(run_copy, change):
    expected = downstream_of(run_copy, "eval")
    assert expected.get("eval") and all(EVAL_SIDE.match(r) for r in expected), expected
    assert planned(run_copy, {"eval": change}) == with_manifest(expected)


@pytest.mark.parametrize("change", [{"rounds": 2}, {"strategy": "random"}])
def test_rollout_key_reruns_rollout_and_downstream(run_copy, change):
    expected = downstream_of(run_copy, "rollout")
    assert {"rollout", "pairs"} <= set(expected) and not {"data", "probe", "embed", "sealong", "mbr"} & set(expected)
    assert planned(run_copy, {"rollout": change}) == with_manifest(expected)


def test_a_command_line_override_reruns_exactly_what_the_file_would(run_copy):
    """`--config 'rollout={rounds: 2}'`: Snakemake hands the 2 over as a string; it is read as the
    integer the schema wants and plans exactly the jobs of the same change made in a file."""
    from_file = planned(run_copy, {"rollout": {"rounds": 2}})
    from_cli = dry_run_counts(run_snakemake(run_copy, "-n", "--configfile", "tiny.yaml",
                                            "--config", "rollout={rounds: 2}"))
    assert from_cli == from_file and from_cli.get("rollout"), (from_cli, from_file)


def test_chunk_size_reruns_from_probe_on(run_copy):
    expected = downstream_of(run_copy, "probe")
    assert {"probe", "embed", "rollout", "pairs"} <= set(expected) and "data" not in expected
    assert "sealong" not in expected  # the SeaLong run reads the data shards, not the probe
    assert planned(run_copy, {"chunking": {"chunk_size": 200}}) == with_manifest(expected)


def test_raw_data_change_reruns_everything_downstream(run_copy):
    raw = run_copy / "data" / "train.jsonl"
    if raw.stat().st_size < 1_000_000:  # Snakemake's default --max-checksum-file-size
        os.utime(raw)  # a touch alone: same checksum, so Snakemake (rightly) plans nothing
        assert planned(run_copy) == {}
    expected = downstream_of(run_copy, "data")
    lines = raw.read_text().splitlines(keepends=True)
    sample = json.loads(lines[-1])
    sample["id"] = f"{sample['id']}-extra"
    raw.write_text("".join(lines) + json.dumps(sample) + "\n")
    assert {"data", "probe", "embed", "rollout", "sealong", "pairs"} <= set(expected)
    assert planned(run_copy) == expected


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_library_edit_reruns_its_stage_onward_not_before(run_copy):
    """A behaviour change in the bandit (used by the rollout only) re-runs rollout and what follows,
    never probe or embed; the jobs run the workflow's own copy of the library (PYTHONPATH)."""
    bandit = run_copy / "workflow_scripts" / "longmab" / "bandit.py"
    _edit(bandit, "#: Added to the pull counts in the exploration bonus (reference value).\nEPS = 1e-6",
          "# documentation-only edit\nEPS = 1e-6")
    assert planned(run_copy) == {}, "a comment edit must not re-run anything"
    expected = downstream_of(run_copy, "rollout")
    _edit(bandit, "EPS = 1e-6", "EPS = 1e-6\n_UNUSED = 0")
    assert planned(run_copy) == expected
    assert not {"data", "probe", "embed", "sealong", "mbr"} & set(expected)


def test_a_changed_training_setting_never_replaces_a_trained_adapter(run_copy, tmp_path):
    """As root (CI) Snakemake's protected() does not stop a re-run: the adapter folder is named by
    everything that determines it, so a new learning rate trains a new adapter beside the old one."""
    manifest = json.loads((run_copy / "results" / "runs" / "tiny.json").read_text())
    old = manifest["runs"]["tiny"]["dpo"]
    (run_copy / "change.yaml").write_text(json.dumps({"dpo": {"learning_rate": 1e-4}}))
    proc = run_snakemake(run_copy, "-n", "--configfile", "tiny.yaml", "change.yaml")
    counts = dry_run_counts(proc)
    assert counts.get("dpo_train") == 2, counts  # both runs train with the new rate
    outputs = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("output: ")]
    assert outputs and not any(f"{old}/adapter" in line for line in outputs), "the old adapter would be replaced"
    said = proc.stdout + proc.stderr
    assert f"{old}/adapter was trained with other settings" in said and "it is kept" in said, said[-2000:]
    assert (run_copy / old / "adapter" / "adapter_model.safetensors").is_file()

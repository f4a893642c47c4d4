"""End to end: the whole pipeline on tests/configs/tiny.yaml (the `tiny_run` fixture runs it once),
from raw data to DPO pairs, a trained and merged model, metrics of base and trained on every
benchmark, tables, plots and the Snakemake HTML report (checked in headless Chromium)."""

from __future__ import annotations

import base64
import csv
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_snakemake

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ["rollout_reward.png", "arm_values.png", "evidence_per_round.png", "dpo_loss.png", "benchmarks_subem.png"]  # in results/plots/{study}/


def merged_config(workdir: Path) -> dict:
    """config.yaml with tiny.yaml merged over it (as snakemake --configfile does, one level deep)."""
    base = yaml.safe_load((workdir / "config.yaml").read_text())
    over = yaml.safe_load((workdir / "tiny.yaml").read_text())
    for key, value in over.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return base


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def cfg(tiny_run) -> dict:
    return merged_config(tiny_run)


@pytest.fixture(scope="module")
def manifest(tiny_run, cfg) -> dict:
    """results/runs/{study}.json: every run's output folders."""
    return json.loads((tiny_run / "results" / "runs" / f"{cfg.get('study') or cfg['run']}.json").read_text())


def test_manifest_names_every_run(cfg, manifest):
    assert set(manifest["runs"]) == set(cfg["runs"]) == {"tiny", "sealong"}
    tiny, sealong = manifest["runs"]["tiny"], manifest["runs"]["sealong"]
    assert tiny["data"] == sealong["data"]  # the runs share the validated shards
    assert "rollout" in tiny and "mbr" in sealong and "rollout" not in sealong


@pytest.mark.parametrize("run", ["tiny", "sealong"])
def test_pairs(tiny_run, manifest, run):
    folder = tiny_run / manifest["runs"][run]["pairs"]
    pairs = read_jsonl(folder / "pairs.jsonl")
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["pairs"] == len(pairs) and stats["runs"] == [run]
    if run == "tiny":
        assert pairs, f"the tiny run made no preference pairs: {stats}"
        assert stats["method"] == "longmab" and stats["probes_kept"] >= 1
    else:
        assert stats["method"] == "sealong" and stats["probes_kept"] is None
        assert stats["generations"] == stats["samples_in"] * cfg_n_sealong(tiny_run)
        assert stats["pairs"] + stats["ties_skipped"] == stats["samples_in"]
    for p in pairs:
        assert p["chosen"] != p["rejected"]
        assert p["input"] in p["prompt"]
        if run == "tiny":
            assert p["chosen_reward"] > p["rejected_reward"]
        else:
            assert p["chosen_mbr"] > p["rejected_mbr"]
    info = json.loads((folder / "dataset_info.json").read_text())
    assert info[f"longmab_{folder.name}"]["ranking"] is True


def cfg_n_sealong(workdir: Path) -> int:
    return merged_config(workdir)["pairs"]["sealong"]["n"]


@pytest.mark.parametrize("run", ["tiny", "sealong"])
def test_dpo_adapter_and_merged_model(tiny_run, cfg, manifest, run):
    d = tiny_run / manifest["runs"][run]["dpo"]
    train = yaml.safe_load((d / "train.yaml").read_text())
    pairs_folder = Path(manifest["runs"][run]["pairs"]).name
    assert train["stage"] == "dpo" and train["dataset"] == f"longmab_{pairs_folder}"
    assert train["model_name_or_path"] == "results/models/policy" and "bf16" not in train
    adapter = d / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "adapter_model.safetensors").stat().st_size > 10_000
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == cfg["dpo"]["lora_rank"]
    log = read_jsonl(d / "trainer_log.jsonl")
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses and all(math.isfinite(x) and x > 0 for x in losses)
    merged = d / "merged"
    assert json.loads((merged / "config.json").read_text())["model_type"] == "llama"
    assert sum(f.stat().st_size for f in merged.glob("*.safetensors")) > 100_000_000  # 135M parameters
    assert (merged / "tokenizer.json").is_file()
    assert not list(d.glob(".adapter.*")) and not list(d.glob(".merged.*"))  # no temporary folders left


def eval_folders(manifest) -> dict[str, str]:
    """Model name -> its evaluation folder (base and every run)."""
    return {"base": f"results/eval/{manifest['base_eval']}",
            **{run: tags["eval"] for run, tags in manifest["runs"].items()}}


def test_metrics_for_every_model_and_benchmark(tiny_run, cfg, manifest):
    for model, folder in eval_folders(manifest).items():
        for bench, spec in cfg["eval"]["benchmarks"].items():
            d = tiny_run / folder / bench
            m = json.loads((d / "metrics.json").read_text())
            preds = read_jsonl(d / "preds.jsonl")
            n_file = sum(1 for line in (tiny_run / spec["path"]).read_text().splitlines() if line.strip())
            expected = min(n_file, cfg["eval"]["max_samples"] or n_file)
            assert m["model"] == model and m["benchmark"] == bench and m["n"] == expected == len(preds)
            for key in ("em", "f1", "subem"):
                assert 0.0 <= m[key] <= 100.0
                assert m[key] == pytest.approx(100 * sum(p[key] for p in preds) / len(preds))
            # provenance: the run, the model with a fingerprint, the settings chain, commit, seed
            prov = m["provenance"]
            assert prov["runs"] == [model] and prov["seed"] == cfg["seed"] and prov["tag"] == Path(folder).name
            assert prov["model"]["fingerprint"] and prov["git_commit"]
            assert prov["settings"]["benchmarks"][bench]["path"] == spec["path"]
            if model != "base":
                assert prov["settings"]["model"]["dpo"]["tag"] == Path(manifest["runs"][model]["dpo"]).name
                # the adapter the merged model came from, with its own fingerprint
                adapter = prov["model"]["adapter"]
                assert adapter["model"] == f"{manifest['runs'][model]['dpo']}/adapter" and adapter["fingerprint"]
            else:
                assert "adapter" not in prov["model"]
            assert m["items"]["id"] == [p["id"] for p in preds]


def test_tables(tiny_run, cfg, manifest):
    tables = tiny_run / "results" / "tables" / (cfg.get("study") or cfg["run"])
    rows = list(csv.DictReader((tables / "main.csv").open()))
    assert [r["model"] for r in rows] == ["base", "tiny", "sealong"]
    folders = eval_folders(manifest)
    for bench in cfg["eval"]["benchmarks"]:
        for r in rows:
            m = json.loads((tiny_run / folders[r["model"]] / bench / "metrics.json").read_text())
            assert float(r[f"{bench}_subem"]) == pytest.approx(m["subem"], abs=1e-3)
            assert float(r[f"{bench}_em"]) == pytest.approx(m["em"], abs=1e-3)
    assert float(rows[0]["delta_subem"]) == 0.0
    for r in rows[1:]:
        assert float(r["delta_subem"]) == pytest.approx(float(r["avg_subem"]) - float(rows[0]["avg_subem"]), abs=1e-3)
        assert float(r["delta_subem_lo"]) <= float(r["delta_subem"]) + 1e-9 <= float(r["delta_subem_hi"]) + 2e-9
        assert r["eval_dir"] == folders[r["model"]] and r["git_commit"]
    md = (tables / "main.md").read_text()
    assert md.startswith("| Model |")
    for model in ("base", "tiny", "sealong"):
        assert re.search(rf"^\| {re.escape(model)} \|", md, re.MULTILINE), md
    quality = list(csv.DictReader((tables / "data_quality.csv").open()))
    assert [q["run"] for q in quality] == ["tiny", "sealong"]
    assert [q["method"] for q in quality] == ["longmab", "sealong"]
    for q in quality:
        stats = json.loads((tiny_run / manifest["runs"][q["run"]]["pairs"] / "stats.json").read_text())
        assert int(q["pairs"]) == stats["pairs"] and int(q["samples_in"]) == stats["samples_in"]
    longmab = quality[0]  # evidence coverage with its interval (>= 2 rolled-out samples) and chance level
    assert 0 < float(longmab["evidence_chance"]) <= 1 and float(longmab["chunks"]) >= 1
    if longmab["evidence_all_lo"]:
        assert float(longmab["evidence_all_lo"]) <= float(longmab["evidence_all"]) <= float(longmab["evidence_all_hi"])


def test_plots(tiny_run, cfg):
    for name in PLOTS:
        data = (tiny_run / "results" / "plots" / (cfg.get("study") or cfg["run"]) / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, name


# --------------------------------------------------------------------------------------------------
# The HTML report in a real browser


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def ensure_chromium() -> str:
    found = find_chromium()
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        proc = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True, env=env,
                              timeout=900, check=False)
        if proc.returncode != 0:  # stale package lists
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600, check=False)
            proc = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True,
                                  env=env, timeout=900, check=False)
        found = find_chromium()
        if found:
            return found
        pytest.skip(f"Chromium is not installed and `apt-get install -y chromium` failed: {proc.stderr[-500:]}")
    pytest.skip("Chromium is not installed and cannot be installed here (needs apt-get as root)")


class _Visible(HTMLParser):
    """Text outside <script>/<style> elements, i.e. what the JavaScript app rendered."""

    def __init__(self):
        super().__init__()
        self.skip = 0
        self.text: list[str] = []
        self.scripts: dict[str, str] = {}
        self._sid = None

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
            self._sid = dict(attrs).get("id") if tag == "script" else None

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skip -= 1
            self._sid = None

    def handle_data(self, data):
        if self.skip:
            if self._sid:
                self.scripts[self._sid] = self.scripts.get(self._sid, "") + data
        elif data.strip():
            self.text.append(data.strip())


def _js_var(script: str, name: str):
    m = re.search(rf"var {name} = (.*);\s*$", script.strip(), re.DOTALL)
    assert m, f"no `var {name}` in the report"
    return json.loads(m.group(1))


def _decode_data_uri(uri: str) -> bytes:
    header, _, payload = uri.partition(",")
    return base64.b64decode(payload) if header.endswith(";base64") else payload.encode()


@pytest.fixture(scope="module")
def report_dom(tiny_run) -> str:
    out = tiny_run / "results" / "report.html"
    run_snakemake(tiny_run, "--configfile", "tiny.yaml", "--report", str(out.relative_to(tiny_run)))
    assert out.stat().st_size > 100_000
    chromium = ensure_chromium()
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
               f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", out.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and "<html" in proc.stdout, proc.stderr[-3000:]
    return proc.stdout


def test_report_renders_table_and_images(report_dom, cfg):
    page = _Visible()
    page.feed(report_dom)
    visible = " ".join(page.text)
    # The React app ran: its navigation lists the result categories (these strings exist only as
    # rendered elements; the embedded data has them inside <script> elements, which are excluded).
    for category in ("Benchmarks", "Tables", "Rollout", "DPO"):
        assert category in visible, f"category {category!r} not rendered; visible text: {visible[:2000]}"
    assert "comparing the runs tiny, sealong" in " ".join(visible.split()), "workflow.rst not rendered"
    # The embedded results: the table and every figure, with their data.
    results = _js_var(page.scripts["results"], "results")
    by_name = {Path(k).name: v for k, v in results.items()}
    table = _decode_data_uri(by_name["main.csv"]["data_uri"]).decode()
    rows = list(csv.DictReader(table.splitlines()))
    assert [r["model"] for r in rows] == ["base", "tiny", "sealong"]
    assert "data_quality.csv" in by_name
    for name in PLOTS:
        assert by_name[name]["mime_type"] == "image/png", name
        assert _decode_data_uri(by_name[name]["data_uri"])[:8] == PNG_MAGIC, name
    categories = _js_var(page.scripts["categories"], "categories")
    assert {"Benchmarks", "Tables", "Rollout", "DPO"} <= set(categories)


def test_make_run_target_is_the_tables():
    """`make run` = `snakemake --cores N` builds rule all, which ends at the tables (and plots, merged model)."""
    assert "$(BIN)/snakemake --cores $(CORES)" in (REPO / "Makefile").read_text()
    common = (REPO / "rules" / "common.smk").read_text()
    assert "*TABLES," in common and '("main", "data_quality")' in common


PLAIN_CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_an_external_row_with_adapter_and_chat_template(tiny_run, cfg, manifest):
    """eval.models may name any model: here the policy folder with the tiny run's DPO adapter merged by
    PEFT (rule merge_adapter) and a chat template without SmolLM2's system prompt. It is evaluated
    on every benchmark with its provenance, and PEFT's merge equals LLaMA-Factory's export of the
    same adapter (the trained row's merged model)."""
    import torch
    from safetensors.torch import load_file

    adapter = f"{manifest['runs']['tiny']['dpo']}/adapter"
    (tiny_run / "plain.jinja").write_text(PLAIN_CHATML)
    ext = {"study": "tiny-ext", "eval": {"models": [
        "base", {"name": "readopted", "model": "results/models/policy", "adapter": adapter,
                 "chat_template": "plain.jinja"}]}}
    (tiny_run / "ext.yaml").write_text(yaml.safe_dump(ext))
    run_snakemake(tiny_run, "results/runs/tiny-ext.json", "--configfile", "tiny.yaml", "ext.yaml")
    folder = json.loads((tiny_run / "results/runs/tiny-ext.json").read_text())["external"]["readopted"]
    targets = [f"{folder}/{bench}/metrics.json" for bench in cfg["eval"]["benchmarks"]]
    run_snakemake(tiny_run, *targets, "--configfile", "tiny.yaml", "ext.yaml")
    for target in targets:
        m = json.loads((tiny_run / target).read_text())
        model = m["provenance"]["model"]
        assert m["model"] == "readopted" and m["n"] > 0
        assert model["model"].startswith("results/models/external/") and model["fingerprint"]
        assert model["adapter"]["model"] == adapter and model["adapter"]["fingerprint"]
        assert model["chat_template"]["path"] == "plain.jinja" and len(model["chat_template"]["sha256"]) == 64
    ours = load_file(next((tiny_run / model["model"]).glob("*.safetensors")))
    theirs = {}
    for f in (tiny_run / manifest["runs"]["tiny"]["dpo"] / "merged").glob("*.safetensors"):
        theirs.update(load_file(f))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(ours[name].float(), theirs[name].float(), atol=1e-3)

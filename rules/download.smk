# Hub downloads, once, before any GPU job (the logic and the plan: workflow_scripts/longmab/hub.py).
#
# - download_model: every hub id in models.policy / models.embedder is downloaded once into the
#   shared hub cache (hub.cache_dir) at its revision (models.revision / models.embedder_revision);
#   the output is a small record naming the snapshot folder and the resolved commit. Jobs that need
#   the model take the record as input (DOWNLOADS.policy_record / DOWNLOADS.embedder_record) and
#   load the local folder it names (longmab.hub.resolve_local; make_engine does it itself).
# - download_benchmark: an eval benchmark with `hub:` set is fetched from the hub as a file
#   (LongBench's data.zip, InfiniteBench's <name>.jsonl), checked row by row and written to its
#   configured `path`, with `<path>.source.json` (repo, revision, commit, rows, sha256) beside it.
# - download: every download of this config (`snakemake download` on a login node with internet).
#
# The download rules are localrules: on a cluster they run on the login node, where the internet
# is; every other job runs offline (HF_HUB_OFFLINE=1, set below for all jobs of this workflow).
# Self-contained (reads only `config`), so a test can include it on its own.
import os

from longmab.hub import download_plan, job_environment

DOWNLOADS = download_plan(config)
# Every job (local, or on a node: sbatch exports this environment) runs offline; the download
# rules still go online (longmab.hub.downloads_offline). A value the user exported wins.
os.environ.update(job_environment(config.get("hub")))
HUB_CONFIG = config.get("hub", {})


localrules:
    download,
    download_model,
    download_benchmark,


rule download:
    """Every hub download of this config (run it on a login node with internet)."""
    input:
        DOWNLOADS.targets,


rule download_model:
    """A hub model's snapshot, once, into the shared cache at its revision; the record names it."""
    output:
        f"{DOWNLOADS.download_dir}/models/{{model}}.json",
    log:
        f"{DOWNLOADS.download_dir}/logs/{{model}}.log",
    wildcard_constraints:
        model=DOWNLOADS.model_pattern(),
    conda:
        "../envs/base.yaml"
    params:
        kind="model",
        repo_id=lambda wc: DOWNLOADS.models[wc.model]["repo_id"],
        revision=lambda wc: DOWNLOADS.models[wc.model]["revision"],
        cache_dir=HUB_CONFIG.get("cache_dir"),
        token_env=HUB_CONFIG.get("token_env", "HF_TOKEN"),
        ignore_patterns=HUB_CONFIG.get("ignore_patterns", ["original/*"]),
    script:
        "../workflow_scripts/download.py"


rule download_benchmark:
    """An eval set from the hub (LongBench data.zip / InfiniteBench jsonl), checked, as our JSONL."""
    output:
        data="{bench_path}",
        record="{bench_path}.source.json",
    log:
        f"{DOWNLOADS.download_dir}/logs/{{bench_path}}.log",
    wildcard_constraints:
        bench_path=DOWNLOADS.benchmark_pattern(),
    conda:
        "../envs/base.yaml"
    params:
        kind="benchmark",
        name=lambda wc: DOWNLOADS.benchmarks[wc.bench_path]["name"],
        format=lambda wc: DOWNLOADS.benchmarks[wc.bench_path]["format"],
        spec=lambda wc: DOWNLOADS.benchmarks[wc.bench_path]["spec"],
        cache_dir=HUB_CONFIG.get("cache_dir"),
        token_env=HUB_CONFIG.get("token_env", "HF_TOKEN"),
    script:
        "../workflow_scripts/download.py"

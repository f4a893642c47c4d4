# LongMab-PO as a Snakemake pipeline: data -> probe -> embed -> rollout -> pairs -> dpo -> eval -> tables
# (the SeaLong baseline: data -> sealong -> mbr -> pairs). Every output folder is named by what
# determines it (rules/common.smk, longmab/runs.py), so named runs share work and never overwrite.
# The algorithm lives in workflow_scripts/longmab/ (no Snakemake imports); rules are thin adapters.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/probe.smk"
include: "rules/embed.smk"
include: "rules/rollout.smk"
include: "rules/sealong.smk"
include: "rules/pairs.smk"
include: "rules/dpo.smk"
include: "rules/eval.smk"
include: "rules/report.smk"


# A requested stop (make stop / SIGTERM, Ctrl-C / SIGINT) ends with what really happened and exit
# status 128 + signal, not "At least one job did not complete successfully"; each run is recorded in
# .snakemake/longmab-runs/ for make resume (workflow_scripts/longmab/runctl.py).
from longmab.runctl import StopGuard

STOP = StopGuard(workflow)


onstart:
    STOP.arm()


onsuccess:
    STOP.success()


onerror:
    STOP.error(log)


rule all:
    default_target: True
    input:
        final_outputs(),


rule preference_data:
    """Stop after the preference data: every run's pairs (`snakemake preference_data`)."""
    input:
        [f"results/pairs/{PLAN.runs[r]['pairs']}/stats.json" for r in RUNS],

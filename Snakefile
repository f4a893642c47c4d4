# LongMab-PO as a Snakemake pipeline: data -> probe -> embed -> rollout -> pairs -> dpo -> eval -> tables.
# The algorithm lives in workflow_scripts/longmab/ (no Snakemake imports); rules are thin adapters.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/probe.smk"
include: "rules/embed.smk"
include: "rules/rollout.smk"
include: "rules/pairs.smk"
include: "rules/dpo.smk"
include: "rules/eval.smk"
include: "rules/report.smk"


rule all:
    input:
        final_outputs(),
    default_target: True

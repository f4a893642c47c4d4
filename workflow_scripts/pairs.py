"""Rule `pairs`: DPO pairs + LLaMA-Factory dataset_info.json + stats.json (thin adapter)."""
from pathlib import Path

from transformers import AutoTokenizer

from longmab.io import read_json, read_jsonl, write_json, write_jsonl
from longmab.logs import setup_logging
from longmab.prompts import load_templates
from longmab.stages.pairs import build_pairs, dataset_info


def main(smk):
    setup_logging(smk.log[0])
    p = smk.params
    model = str(smk.input.model) if smk.input.model else p.policy  # built embedded model or user path
    tok = AutoTokenizer.from_pretrained(model)
    rows = [r for path in smk.input.rollouts for r in read_jsonl(path)]
    pairs, stats = build_pairs(
        rows, load_templates(p.prompts),
        lambda s: tok.encode(s, add_special_tokens=False), lambda ids: tok.decode(ids),
        p.max_prompt_length, p.reserve_tokens, p.seed, p.subem,
    )
    probe_stats = [read_json(path) for path in smk.input.probe_stats]
    manifest = read_json(smk.input.manifest)
    stats = {
        "samples_in": manifest["samples_used"],
        "probes_kept": sum(s["kept"] for s in probe_stats),
        "probes_dropped": sum(s["dropped"] for s in probe_stats),
        "probe_dropped_ids": [d for s in probe_stats for d in s["dropped_ids"]],
        **stats,
    }
    write_jsonl(smk.output.pairs, pairs)
    write_json(smk.output.dataset_info, dataset_info(f"longmab_{smk.wildcards.run}", Path(smk.output.pairs).name))
    write_json(smk.output.stats, stats)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

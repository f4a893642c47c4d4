"""Rule `pairs`: DPO pairs + LLaMA-Factory dataset_info.json + stats.json (thin adapter).

LongMab-PO pairs come from the rollout shards (strict reward, method §6), SeaLong pairs from the
MBR-scored samples (method.md §10), imported pairs from pairs.from_file; all are written in the
same format.
"""
from pathlib import Path

from transformers import AutoTokenizer

from longmab.hub import resolve_local
from longmab.io import read_json, read_jsonl, write_json, write_jsonl
from longmab.logs import setup_logging
from longmab.prompts import load_templates
from longmab.stages.pairs import build_pairs, dataset_info
from longmab.stages.pairs_file import import_pairs
from longmab.stages.sealong import build_sealong_pairs


def main(smk):
    setup_logging(smk.log[0])
    p = smk.params
    model = str(smk.input.model) if smk.input.model else p.policy  # built embedded model or user path
    tok = AutoTokenizer.from_pretrained(resolve_local(model))  # a download record names a snapshot
    templates = load_templates(p.prompts)

    def encode(s):
        return tok.encode(s, add_special_tokens=False)

    def decode(ids):
        return tok.decode(ids)

    if p.method == "file":  # pairs.from_file
        pairs, stats = import_pairs(smk.input.file, encode, decode, p.max_prompt_length, p.reserve_tokens,
                                    truncate=bool(p.truncate))
        stats = {"method": "file", "runs": list(p.runs), "samples_in": stats["records"], **stats}
        write_jsonl(smk.output.pairs, pairs)
        write_json(smk.output.dataset_info, dataset_info(f"longmab_{smk.wildcards.tag}", Path(smk.output.pairs).name,
                                                         system=any("system" in x for x in pairs)))
        write_json(smk.output.stats, stats)
        return
    manifest = read_json(smk.input.manifest)
    stats = {"method": p.method, "runs": list(p.runs), "samples_in": manifest["samples_used"]}
    if p.method == "sealong":
        rows = [r for path in smk.input.scored for r in read_jsonl(path)]
        pairs, pair_stats = build_sealong_pairs(rows, templates, encode, decode, p.max_prompt_length,
                                                p.reserve_tokens, p.instruction, p.seed, p.subem,
                                                prompt_mode=p.prompt_mode)
        stage = [read_json(path) for path in smk.input.stage_stats]
        stats.update({"probes_kept": None, "probes_dropped": None, "probe_dropped_ids": [],
                      "engine_seconds": sum(s["seconds_engine"] for s in stage)})
    else:
        rows = [r for path in smk.input.rollouts for r in read_jsonl(path)]
        pairs, pair_stats = build_pairs(rows, templates, encode, decode, p.max_prompt_length, p.reserve_tokens,
                                        p.seed, p.subem)
        probe_stats = [read_json(path) for path in smk.input.probe_stats]
        stats["engine_seconds"] = sum(read_json(path).get("seconds_engine", 0.0) for path in smk.input.stage_stats)
        stats.update({"probes_kept": sum(s["kept"] for s in probe_stats),
                      "probes_dropped": sum(s["dropped"] for s in probe_stats),
                      "probe_dropped_ids": [d for s in probe_stats for d in s["dropped_ids"]]})
        pair_stats.setdefault("generations", sum(len(r.get("rounds", [])) for r in rows))
    stats.update(pair_stats)
    write_jsonl(smk.output.pairs, pairs)
    write_json(smk.output.dataset_info, dataset_info(f"longmab_{smk.wildcards.tag}", Path(smk.output.pairs).name))
    write_json(smk.output.stats, stats)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

"""Rule `probe`: chunk contexts and generate probe chains of thought for one shard (thin adapter)."""
from longmab.engines import engine_options, make_engine
from longmab.io import read_jsonl, write_json, write_jsonl
from longmab.logs import setup_logging
from longmab.prompts import load_templates
from longmab.stages.probe import probe_sampling, run_probe


def main(smk):
    setup_logging(smk.log[0])
    p = smk.params
    model = str(smk.input.model) if smk.input.model else p.engine["model"]  # built embedded model or user path
    samples = read_jsonl(smk.input.shard)
    engine = make_engine(p.engine["backend"], model, dtype=p.engine["dtype"],
                         max_model_len=p.engine["max_model_len"], seed=p.seed,
                         **engine_options(smk.config, "probe"))
    try:
        # subem: config reward.subem (the keep decision's containment test); max_model_len: samples
        # whose probe prompt + max_tokens exceed it are dropped with a reason, not the whole shard.
        kept, stats = run_probe(samples, engine, load_templates(p.prompts), probe_sampling(p.sampling),
                                p.chunking, p.seed, subem=p.subem, max_model_len=p.engine["max_model_len"])
    finally:
        engine.close()
    write_jsonl(smk.output.probes, kept)
    write_json(smk.output.stats, stats)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

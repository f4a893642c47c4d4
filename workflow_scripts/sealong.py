"""Rule `sealong`: N full-context samples per question for the SeaLong baseline (thin adapter)."""
from longmab.engines import SamplingConfig, engine_options, make_engine
from longmab.io import read_jsonl, write_json, write_jsonl
from longmab.logs import setup_logging
from longmab.prompts import load_templates
from longmab.stages.sealong import sample_sealong


def main(smk):
    setup_logging(smk.log[0])
    p = smk.params
    model = str(smk.input.model) if smk.input.model else p.engine["model"]  # built embedded model or user path
    samples = read_jsonl(smk.input.shard)
    s = p.sampling
    sampling = SamplingConfig(temperature=s["temperature"], top_p=s["top_p"], presence_penalty=s["presence_penalty"],
                              max_tokens=s["max_tokens"])
    engine = make_engine(p.engine["backend"], model, dtype=p.engine["dtype"],
                         max_model_len=p.engine["max_model_len"], seed=p.seed,
                         **engine_options(smk.config, "sealong"))
    try:
        rows, stats = sample_sealong(samples, engine, load_templates(p.prompts), sampling, s["n"], p.instruction,
                                     p.seed, max_model_len=p.engine["max_model_len"], prompt_mode=p.prompt_mode)
    finally:
        engine.close()
    write_jsonl(smk.output.samples, rows)
    write_json(smk.output.stats, stats)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

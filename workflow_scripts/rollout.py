"""Rule `rollout`: the UCB rollout of one shard, resumable per round (thin adapter)."""
from pathlib import Path

from longmab.engine import SamplingConfig, make_engine
from longmab.io import read_jsonl, write_jsonl
from longmab.logs import setup_logging
from longmab.prompts import load_templates
from longmab.stages.rollout import run_rollout


def main(smk):
    log = setup_logging(smk.log[0])
    p = smk.params
    model = str(smk.input.model) if smk.input.model else p.engine["model"]  # built embedded model or user path
    out = Path(smk.output[0])
    resume = out.with_name(f".{out.stem}.resume.json")
    rows = read_jsonl(smk.input.arms)
    engine = make_engine(p.engine["backend"], model, dtype=p.engine["dtype"],
                         max_model_len=p.engine["max_model_len"], seed=p.seed)
    try:
        result, stats = run_rollout(rows, engine, load_templates(p.prompts), SamplingConfig.from_dict(p.sampling),
                                    p.rounds, p.top_k, p.seed, p.subem, resume_path=resume,
                                    strategy=p.strategy)
    finally:
        engine.close()
    write_jsonl(out, result)
    resume.unlink(missing_ok=True)
    log.info("rollout (%s): %d generations in %.1f s, %.2f%% outside the engine", stats["strategy"],
             stats["generations"], stats["seconds_total"], 100 * stats["overhead_share"])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

"""Rule `rollout`: the rollout of one shard, resumable per sample-round from its journal (thin adapter).

Inputs: ``arms`` = one embed shard (this shard's rows), or a list of embed shards (all of them, in
shard order) together with params ``shard`` (this job's index) and ``shards`` (how many): then the
job takes its part of the concatenated rows with ``assign_shards`` (balanced by kept samples).
Optional params (absent = default): ``early_stop`` ({enabled, min_rounds}), ``code`` (the code
version; a journal of other code is not resumed). The speed knobs ``rollout.schedule`` (sync | async:
same records) and ``engine.vllm`` are read from the config, not params: changing them re-runs nothing.
Outputs: the rollout rows and (``stats``, optional) the run's statistics as JSON.
"""
from pathlib import Path

from longmab.engines import SamplingConfig, engine_options, make_engine
from longmab.io import read_jsonl, write_json, write_jsonl
from longmab.logs import setup_logging
from longmab.prompts import load_templates
from longmab.stages.rollout import (
    assign_shards,
    journal_path_for,
    legacy_checkpoint_for,
    run_rollout,
    set_aside,
)


def shard_rows(arms, shard=None, shards=None) -> list[dict]:
    """This job's rows: the one file's, or its part of all files' (see the module docstring)."""
    files = [arms] if isinstance(arms, (str, Path)) else list(arms)
    rows = [r for f in files for r in read_jsonl(f)]
    if len(files) == 1 and shard is None:
        return rows
    if shard is None or shards is None:
        raise ValueError(f"rollout: {len(files)} embed shards given but params shard/shards are not set")
    return assign_shards(rows, int(shards))[int(shard)]


def main(smk):
    log = setup_logging(smk.log[0])
    p = smk.params
    out = Path(smk.output[0])
    journal = journal_path_for(out)
    legacy = legacy_checkpoint_for(out)
    if legacy.exists():
        set_aside(legacy, "checkpoint of an earlier version (whole-state resume file); not resumable")
    rows = shard_rows(smk.input.arms, getattr(p, "shard", None), getattr(p, "shards", None))
    if not any(r["chunks"] for r in rows):
        write_jsonl(out, [dict(r, rounds=[]) for r in rows])
        if getattr(smk.output, "stats", None):
            write_json(smk.output.stats, {"samples": len(rows), "generations": 0, "seconds_engine": 0.0})
        log.info("rollout: %d samples, none with chunks; no engine started", len(rows))
        return
    model = str(smk.input.model) if smk.input.model else p.engine["model"]  # built embedded model or user path
    engine = make_engine(p.engine["backend"], model, dtype=p.engine["dtype"],
                         max_model_len=p.engine["max_model_len"], seed=p.seed,
                         **engine_options(smk.config, "rollout"))
    schedule = getattr(p, "schedule", None) or smk.config.get("rollout", {}).get("schedule")
    try:
        result, stats = run_rollout(rows, engine, load_templates(p.prompts), SamplingConfig.from_dict(p.sampling),
                                    p.rounds, p.top_k, p.seed, p.subem, journal_path=journal,
                                    strategy=p.strategy, mode=schedule,
                                    early_stop=getattr(p, "early_stop", None), journal_key=getattr(p, "code", None))
    finally:
        engine.close()
    write_jsonl(out, result)
    if getattr(smk.output, "stats", None):
        write_json(smk.output.stats, {"samples": len(rows), **stats})
    journal.unlink(missing_ok=True)
    occ = "" if stats["occupancy"] is None else f", engine occupancy {stats['occupancy']:.2f}"
    log.info("rollout (%s, %s): %d generations (+%d resumed, %d of %d planned, %d samples stopped early) in "
             "%.1f s, %.2f%% outside the engine%s", stats["strategy"], stats["mode"], stats["generations"],
             stats["generations_resumed"], stats["generations"] + stats["generations_resumed"],
             stats["generations_planned"], stats["stopped_early"], stats["seconds_total"],
             100 * stats["overhead_share"], occ)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

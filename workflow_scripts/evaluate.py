"""Rule `eval`: one model, every benchmark, one engine load (thin adapter)."""
from pathlib import Path

from longmab.benchmarks import load_benchmark
from longmab.engines import (
    SamplingConfig,
    engine_options,
    lora_engine_args,
    make_engine,
    set_adapter,
    set_chat_template,
)
from longmab.io import write_json, write_jsonl
from longmab.logs import setup_logging
from longmab.prompts import load_templates
from longmab.provenance import describe_model, file_sha256, provenance_record
from longmab.stages.evaluate import evaluate


def eval_sampling(p) -> SamplingConfig:
    """The evaluation decoding from the rule params: eval.temperature (paper 0: greedy), eval.max_tokens
    and eval.presence_penalty (paper 1.0: the reference's eval.py decodes greedily with it, and vLLM
    applies the penalty in greedy decoding too)."""
    return SamplingConfig(temperature=p.temperature, top_p=1.0, presence_penalty=p.presence_penalty,
                          max_tokens=p.max_tokens)


def main(smk):
    setup_logging(smk.log[0])
    p = smk.params
    names = list(p.benchmarks)
    benchmarks = {name: load_benchmark(path, p.benchmarks[name]["format"], p.max_samples)
                  for name, path in zip(names, smk.input.benchmarks)}
    model = str(smk.input.model) if smk.input.model else p.model  # a built folder or a user path / hub id
    sampling = eval_sampling(p)
    options = engine_options(smk.config, "eval")
    if p.serve_adapter:  # eval.adapters: the base model's engine applies the LoRA adapter to each request
        options["vllm"] = {**options["vllm"], **lora_engine_args(p.adapter)}
    engine = make_engine(p.engine["backend"], model, dtype=p.engine["dtype"],
                         max_model_len=p.engine["max_model_len"], seed=p.seed, **options)
    template = Path(p.chat_template).read_text(encoding="utf-8") if p.chat_template else None
    set_chat_template(engine, template)
    if p.serve_adapter:
        set_adapter(engine, p.adapter)
    try:
        preds, metrics = evaluate(benchmarks, engine, load_templates(p.prompts), sampling, p.max_input_len, p.seed,
                                  max_model_len=p.engine["max_model_len"], model_name=p.model_name)
    finally:
        engine.close()
    described = describe_model(model, p.revision)
    if p.adapter:  # a trained or external row: the LoRA adapter its merged model was made from,
        described["adapter"] = describe_model(p.adapter)  # or that the engine applied (eval.adapters)
        described["served"] = "adapter" if p.serve_adapter else "merged"
    if template is not None:
        described["chat_template"] = {"path": p.chat_template, "sha256": file_sha256(p.chat_template)}
    prov = provenance_record(model=described, workflow_dir=smk.scriptdir, **p.provenance)
    for name, preds_path, metrics_path in zip(names, smk.output.preds, smk.output.metrics):
        write_jsonl(preds_path, preds[name])
        # Per-item scores (0-1) for the paired bootstrap of the tables, and what produced them.
        items = {"id": [r["id"] for r in preds[name]], **{k: [r[k] for r in preds[name]] for k in ("em", "f1", "subem")}}
        write_json(metrics_path, {**metrics[name], "items": items, "provenance": prov})


if __name__ == "__main__":
    main(snakemake)  # noqa: F821

"""DPO stage helpers: the LLaMA-Factory yaml, device overrides, and LLaMA-Factory's own dataset loader
on a pairs file + dataset_info.json as the pipeline writes them."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from longmab.config import load_schema, validate_config
from longmab.dpo import (
    accumulation_steps,
    batch_overrides,
    count_pairs,
    device_overrides,
    dump_yaml,
    export_args,
    read_trainer_log,
    train,
    train_args,
    training_processes,
)
from longmab.stages.pairs import dataset_info

REPO = Path(__file__).resolve().parents[2]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def dpo_defaults(**over):
    cfg = validate_config({"dpo": dict(over)}, load_schema())
    return cfg["dpo"]


def make_args(dpo, **kw):
    base = {"model": "results/models/policy", "dataset": "longmab_x", "dataset_dir": "results/pairs/x",
            "template": "chatml", "output_dir": "results/dpo/x/adapter", "seed": 7}
    base.update(kw)
    return train_args(dpo, **base)


def test_train_args_paper_defaults():
    a = make_args(dpo_defaults(deepspeed="configs/ds_z2_config.json"))
    assert a["stage"] == "dpo" and a["do_train"] is True and a["finetuning_type"] == "lora"
    assert (a["pref_loss"], a["pref_beta"], a["pref_ftx"]) == ("sigmoid", 0.1, 0.1)
    assert (a["lora_target"], a["lora_rank"], a["lora_alpha"], a["lora_dropout"]) == ("all", 8, 16, 0.0)
    assert (a["learning_rate"], a["lr_scheduler_type"], a["warmup_ratio"], a["num_train_epochs"]) == (2e-5, "cosine", 0.1, 2)
    assert a["cutoff_len"] == 8500 and a["bf16"] is True and a["deepspeed"] == "configs/ds_z2_config.json"
    assert a["disable_gradient_checkpointing"] is False
    assert a["val_size"] == 0.1 and a["eval_strategy"] == "epoch"
    assert (a["dataset"], a["dataset_dir"], a["template"]) == ("longmab_x", "results/pairs/x", "chatml")
    assert a["model_name_or_path"] == "results/models/policy" and a["seed"] == 7
    assert (a["logging_steps"], a["plot_loss"], a["report_to"], a["save_strategy"]) == (1, True, "none", "no")
    assert a["optim"] == "adamw_torch" and a["ddp_timeout"] == 180000000  # the reference's yaml (issue #9.7)
    assert (a["per_device_train_batch_size"], a["gradient_accumulation_steps"]) == (1, 1)
    for key in ("gradient_checkpointing", "extra", "effective_batch_size"):
        assert key not in a


def test_train_args_cpu_config():
    a = make_args(dpo_defaults(bf16=False, gradient_checkpointing=False, val_size=0.0, deepspeed="",
                               extra={"max_samples": 10, "logging_steps": 5}))
    assert "bf16" not in a and "deepspeed" not in a and "val_size" not in a and "eval_strategy" not in a
    assert a["disable_gradient_checkpointing"] is True
    assert a["max_samples"] == 10 and a["logging_steps"] == 5  # extra passes through and wins


def test_yaml_round_trip_keeps_strings():
    a = make_args(dpo_defaults())
    text = dump_yaml(a, "# header\n")
    assert text.startswith("# header\nstage: dpo\n")
    assert "save_strategy: 'no'" in text  # not the YAML boolean
    assert yaml.safe_load(text) == a


def test_export_args():
    e = export_args(model="m", adapter_dir="a", template="chatml", finetuning_type="lora", export_dir="out")
    assert e["model_name_or_path"] == "m" and e["adapter_name_or_path"] == "a" and e["export_device"] == "cpu"
    full = export_args(model="m", adapter_dir="a", template="chatml", finetuning_type="full", export_dir="out")
    assert full["model_name_or_path"] == "a" and "adapter_name_or_path" not in full


def test_device_overrides():
    assert device_overrides({"bf16": True}, gpu=True) == {}
    assert device_overrides({"bf16": True, "fp16": False}, gpu=False, cpu_bf16=False) == {"bf16": False}
    assert device_overrides({}, gpu=False, cpu_bf16=False) == {}
    # a CPU with native bf16 (AMX / AVX512-BF16) keeps bf16: LLaMA-Factory then needs use_cpu
    assert device_overrides({"bf16": True}, gpu=False, cpu_bf16=True) == {"use_cpu": True}
    assert device_overrides({"bf16": True, "fp16": True}, gpu=False, cpu_bf16=True) == {"bf16": False, "fp16": False}
    assert device_overrides({}, gpu=False, cpu_bf16=True) == {}


def test_effective_batch_size_default_is_the_papers():
    assert dpo_defaults()["effective_batch_size"] == 4
    assert dpo_defaults(effective_batch_size=None)["effective_batch_size"] is None


@pytest.mark.parametrize(
    "gpus,env,processes",
    [
        (0, {}, 1),  # CPU: one process
        (1, {}, 1),
        (1, {"FORCE_TORCHRUN": "1"}, 1),  # DeepSpeed on one GPU: torchrun with one process
        (2, {}, 2),  # LLaMA-Factory launches torchrun by itself with every visible GPU
        (4, {}, 4),
        (4, {"NPROC_PER_NODE": "2"}, 2),
        (4, {"NNODES": "2"}, 8),
        (0, {"FORCE_TORCHRUN": "true"}, 1),
    ],
)
def test_training_processes(gpus, env, processes):
    assert training_processes(gpus, env) == processes


def test_accumulation_keeps_the_effective_batch():
    # paper: 4 = 1 per device x 4 GPUs x 1; on fewer GPUs the accumulation makes up the difference.
    assert [accumulation_steps(4, 1, n) for n in (1, 2, 4)] == [4, 2, 1]
    assert accumulation_steps(8, 2, 2) == 2
    with pytest.raises(ValueError, match=r"dpo.effective_batch_size 4 is not a multiple of .* 1 x 3 .* = 3"):
        accumulation_steps(4, 1, 3)
    with pytest.raises(ValueError, match="not a multiple"):
        accumulation_steps(4, 1, 8)  # more processes than the effective batch
    with pytest.raises(ValueError, match=">= 1"):
        accumulation_steps(4, 0, 1)


def test_batch_overrides_logged(caplog):
    args = {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 2}
    with caplog.at_level("INFO", logger="longmab"):
        assert batch_overrides(args, 4, gpus=2, environ={}) == {"gradient_accumulation_steps": 2}
        assert batch_overrides(args, 4, gpus=0, environ={}) == {"gradient_accumulation_steps": 4}
        assert batch_overrides(args, None, gpus=2, environ={}) == {}  # null: as configured
    assert "effective 4 = 1 per device x 2 process(es) (2 GPU(s) visible) x accumulation 2" in caplog.text
    assert "x accumulation 2 = 4 (dpo.effective_batch_size is null" in caplog.text


@pytest.mark.slow
def test_train_passes_the_derived_accumulation_to_llamafactory(tmp_path):
    """The real llamafactory-cli gets gradient_accumulation_steps on its command line (here it then
    fails on a model path that does not exist, after the command line was logged)."""
    d = write_dataset(tmp_path / "pairs")
    args = make_args(dpo_defaults(bf16=False, val_size=0.0, deepspeed=""), dataset="longmab_t",
                     dataset_dir=str(d), model=str(tmp_path / "no-model"))
    (tmp_path / "train.yaml").write_text(dump_yaml(args))
    with pytest.raises(ValueError, match="not a multiple"):
        train(tmp_path / "train.yaml", tmp_path / "adapter", tmp_path / "log.jsonl", tmp_path / "lf.log",
              gpu=True, gpus=3, effective_batch_size=4)
    pytest.importorskip("llamafactory")
    with pytest.raises(RuntimeError, match="llamafactory-cli train failed"):
        train(tmp_path / "train.yaml", tmp_path / "adapter", tmp_path / "log.jsonl", tmp_path / "lf.log",
              gpu=False, effective_batch_size=4)
    command = (tmp_path / "lf.log").read_text().splitlines()[0]
    assert command.startswith("$ ") and " train " in command
    assert " gradient_accumulation_steps=4 " in command and "output_dir=" in command
    assert not (tmp_path / "adapter").exists()


def write_dataset(folder: Path, name="longmab_t") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "pairs_small.jsonl", folder / "pairs.jsonl")
    (folder / "dataset_info.json").write_text(json.dumps(dataset_info(name, "pairs.jsonl")))
    return folder


def test_count_pairs_and_empty_dataset_refused(tmp_path):
    d = write_dataset(tmp_path / "pairs")
    assert count_pairs(d, "longmab_t") == 2
    with pytest.raises(ValueError, match="no entry 'other'"):
        count_pairs(d, "other")
    (d / "pairs.jsonl").write_text("")
    args = make_args(dpo_defaults(), dataset="longmab_t", dataset_dir=str(d))
    (tmp_path / "train.yaml").write_text(dump_yaml(args))
    with pytest.raises(ValueError, match="no preference pairs"):
        train(tmp_path / "train.yaml", tmp_path / "adapter", tmp_path / "log.jsonl", tmp_path / "lf.log", gpu=False)
    assert not (tmp_path / "adapter").exists()


def test_read_trainer_log(tmp_path):
    (tmp_path / "trainer_log.jsonl").write_text('{"current_steps": 1, "loss": 0.7}\n\n{"current_steps": 2, "loss": 0.6}\n')
    assert [r["loss"] for r in read_trainer_log(tmp_path / "trainer_log.jsonl")] == [0.7, 0.6]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "loss": 0.7}]}))
    assert read_trainer_log(tmp_path / "trainer_state.json") == [{"step": 1, "loss": 0.7}]


def byte_level_tokenizer():
    """A tiny offline ChatML-capable tokenizer (bytes only, no merges): no model download needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    return hf


def test_llamafactory_loads_the_pairs(tmp_path):
    """LLaMA-Factory 0.9.5's own loader (parser + align + pairwise processor) reads our dataset."""
    pytest.importorskip("llamafactory")
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import get_train_args

    d = write_dataset(tmp_path / "pairs")
    (attr,) = get_dataset_list(["longmab_t"], str(d))
    assert attr.ranking is True and attr.load_from == "file" and attr.formatting == "alpaca"

    args = make_args(dpo_defaults(bf16=False, val_size=0.0, deepspeed=""), dataset="longmab_t", dataset_dir=str(d),
                     output_dir=str(tmp_path / "out"))
    args["cutoff_len"] = 512
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tokenizer = byte_level_tokenizer()
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    module = get_dataset(template, model_args, data_args, training_args, stage="rm", tokenizer=tokenizer)
    ds = module["train_dataset"]
    assert len(ds) == 2
    pairs = [json.loads(line) for line in (FIXTURES / "pairs_small.jsonl").read_text().splitlines()]
    for example, pair in zip(ds, pairs):
        chosen = tokenizer.decode(example["chosen_input_ids"])
        rejected = tokenizer.decode(example["rejected_input_ids"])
        assert chosen.startswith("<|im_start|>user\n" + pair["prompt"] + "<|im_end|>\n<|im_start|>assistant\n")
        assert chosen.endswith(pair["chosen"] + "<|im_end|>\n")
        assert rejected.endswith(pair["rejected"] + "<|im_end|>\n")
        # only the response is trained on: the prompt tokens are masked
        labels = [t for t in example["chosen_labels"] if t != -100]
        assert tokenizer.decode(labels) == pair["chosen"] + "<|im_end|>\n"


def test_template_parity_of_the_embedded_policy(policy_model):
    """DPO must train on the prompts the engines send: with the embedded config's template and
    system prompt, LLaMA-Factory renders a user turn byte for byte like SmolLM2's own chat template;
    plain chatml (no system prompt) and smollm2's own default (a trailing period) do not."""
    from longmab.dpo import template_parity

    models = yaml.safe_load((REPO / "config.yaml").read_text())["models"]
    same = template_parity(policy_model, models["template"], models["default_system"])
    assert same["match"], same
    assert same["tokenizer"].startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    for template, system in (("chatml", None), ("smollm2", None)):
        other = template_parity(policy_model, template, system)
        assert not other["match"] and other["llamafactory"] != other["tokenizer"]


def test_default_system_is_written_only_when_set():
    base = {"model": "m", "dataset": "d", "dataset_dir": "dd", "template": "smollm2",
            "output_dir": "o", "seed": 1}
    assert "default_system" not in train_args({}, **base)
    assert train_args({}, **base, default_system="S")["default_system"] == "S"
    e = export_args(model="m", adapter_dir="a", template="smollm2", finetuning_type="lora",
                    export_dir="out", default_system="S")
    assert e["default_system"] == "S"

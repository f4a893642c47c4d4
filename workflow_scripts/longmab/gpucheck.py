"""The prepared GPU check (``bench/gpu_check.sh``): our GPU code paths on a tiny model built on the spot.

Needs PyTorch and transformers (plus peft/accelerate for the DPO step); no vLLM, no network, no model
download. :func:`build_tiny_llama` writes a random-weight Llama-architecture model (2 layers, hidden
64; the embedded SmolLM2 tokenizer when its files are at hand, else a byte-level ChatML tokenizer
made in code) in a second. :func:`run_checks` then runs, each timed and reported as one table row:

* ``device``: the CPU/CUDA decision (:func:`longmab.device.check_gpu_job`, CUDA not initialised);
* ``transformers engine``: :class:`longmab.engines.HFEngine` on the chosen device, seeded sampling
  twice (must be identical) and greedy decoding;
* ``embedder``: :func:`longmab.stages.embed.load_encoder` (sentence-transformers) on a tiny model
  of the same kind, when sentence-transformers is installed;
* ``dpo step``: one LLaMA-Factory DPO step (LoRA) through :func:`longmab.dpo.train`, when
  ``llamafactory`` is installed.

``python -m longmab.gpucheck --device auto|cpu|cuda`` prints the table; exit status 1 when a row failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

#: Shape of the tiny model: head_dim 32 (vLLM's CPU kernels need >= 32, should anyone load it there).
TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
                  tie_word_embeddings=True)

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def default_tokenizer_dir(repo: Path | None = None) -> Path | None:
    """The embedded policy's tokenizer files: ``results/models/policy`` (built by ``make run``) or
    ``bench/out/tokenizer`` (what ``bench/gpu_check.sh --stage-tokenizer`` copies for a GPU machine)."""
    repo = repo or Path(__file__).resolve().parents[2]
    for d in (repo / "results" / "models" / "policy", repo / "bench" / "out" / "tokenizer"):
        if (d / "tokenizer.json").is_file():
            return d
    return None


def byte_level_chatml_tokenizer():
    """A ChatML tokenizer over bytes (no merges), made in code: needs no file at all."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 bos_token=None)
    hf.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    hf.chat_template = CHATML
    return hf


def build_tiny_llama(out_dir: str | os.PathLike, seed: int = 0, tokenizer_dir: str | os.PathLike | None = None,
                     dtype: str = "float32", init_std: float = 0.02) -> Path:
    """Write a random-weight Llama-architecture causal LM with a tokenizer into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Created (an existing folder is overwritten file by file).
    seed : int
        ``torch.manual_seed`` before the weights are initialised: same seed, same weights.
    tokenizer_dir : path, optional
        A folder with ``tokenizer.json`` (+ config, chat template), e.g. the embedded SmolLM2 policy;
        None = :func:`default_tokenizer_dir`, else the byte-level ChatML tokenizer.
    dtype : str
        Saved weight dtype (``float32``, ``bfloat16``).
    init_std : float
        ``initializer_range`` of the weights (larger = peakier next-token distributions, so greedy
        and sampled outputs vary from token to token).

    Returns
    -------
    Path
        ``out_dir`` (vocabulary = the tokenizer's length; ``eos``/``pad`` = the tokenizer's).
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from .models import _torch_dtype

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = Path(tokenizer_dir) if tokenizer_dir else default_tokenizer_dir()
    tok = AutoTokenizer.from_pretrained(str(src)) if src else byte_level_chatml_tokenizer()
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHATML
    eos = tok.convert_tokens_to_ids(tok.eos_token)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=pad,
                      initializer_range=float(init_std), **TINY_LLAMA)
    torch.manual_seed(int(seed))
    model = LlamaForCausalLM(cfg).to(_torch_dtype(dtype))
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# --------------------------------------------------------------------------------------------------
# the checks
# --------------------------------------------------------------------------------------------------

CONVERSATIONS = [
    [{"role": "user", "content": "Where was Ada born? Answer in one word."}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Which year was the town founded?"}],
    [{"role": "user", "content": "Name a colour."}],
]


def _row(component: str, device: str, fn: Callable[[], str]) -> dict:
    t0 = time.perf_counter()
    try:
        result, ok = fn(), True
    except ModuleNotFoundError as exc:
        result, ok = f"skipped: {exc.name} not installed", None
    except Exception as exc:  # noqa: BLE001  # a failed check is a row, not a crash
        result, ok = f"FAILED: {type(exc).__name__}: {exc}".replace("\n", " ")[:300], False
        traceback.print_exc(file=sys.stderr)
    return {"component": component, "device": device, "seconds": round(time.perf_counter() - t0, 1),
            "result": result, "ok": ok}


def check_engine(model_dir: Path, device: str) -> str:
    """HFEngine on ``device``: seeded sampling twice (identical), greedy once; model on the device."""
    from .engines import HFEngine, SamplingConfig

    eng = HFEngine(str(model_dir), dtype="float32", max_model_len=1024, seed=0, device=device)
    try:
        where = str(eng.model.device)
        if not where.startswith(device):
            raise AssertionError(f"model is on {where}, expected {device}")
        sampled = SamplingConfig(temperature=1.0, top_p=0.9, presence_penalty=1.0, max_tokens=24)
        a = eng.generate(CONVERSATIONS, sampled, [1, 2, 3])
        b = eng.generate(CONVERSATIONS, sampled, [1, 2, 3])
        if a != b:
            raise AssertionError("the same seeds gave different text")
        greedy = eng.generate(CONVERSATIONS[:1], SamplingConfig(temperature=0.0, max_tokens=24), [0])
        toks = eng.last_stats["generated_tokens"]
        return f"ok: model on {where}, 3 seeded samples reproduced, greedy {toks} tokens ({greedy[0][:20]!r})"
    finally:
        eng.close()


def check_embedder(model_dir: Path, device: str) -> str:
    """Our encoder (sentence-transformers) over the tiny model: finite 64-dim vectors on ``device``."""
    import numpy as np
    import sentence_transformers  # noqa: F401  # a clear "skipped" row when it is absent
    import torch

    from .stages.embed import cosine_values, load_encoder

    before = torch.cuda.memory_allocated() if device == "cuda" else 0
    encode = load_encoder(str(model_dir))
    emb = np.asarray(encode(["first chunk of text", "second chunk", "a question?"]))
    if emb.shape[0] != 3 or not np.isfinite(emb).all():
        raise AssertionError(f"bad embeddings, shape {emb.shape}")
    vals = cosine_values(encode, "a question?", ["first chunk of text", "second chunk"])
    used = (torch.cuda.memory_allocated() - before) if device == "cuda" else 0
    if device == "cuda" and used <= 0:
        raise AssertionError("the encoder allocated no CUDA memory: it ran on the CPU")
    return f"ok: embeddings {emb.shape}, cosines {[round(v, 3) for v in vals]}" + (
        f", {used / 2**20:.1f} MiB on CUDA" if device == "cuda" else "")


def check_dpo(model_dir: Path, device: str, work: Path) -> str:
    """One LLaMA-Factory DPO step (LoRA) through longmab.dpo.train on 4 tiny pairs."""
    import importlib.util

    if importlib.util.find_spec("llamafactory") is None:
        raise ModuleNotFoundError("llamafactory not installed", name="llamafactory")
    from .dpo import dump_yaml, read_trainer_log, train, train_args
    from .stages.pairs import dataset_info

    data = work / "pairs"
    data.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": f"Document: item {i} is red.\nQuestion: what colour is item {i}?",
             "chosen": "Answer: red", "rejected": "Answer: blue"} for i in range(4)]
    (data / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "dataset_info.json").write_text(json.dumps(dataset_info("gpucheck", "pairs.jsonl")))
    dpo = {"pref_loss": "sigmoid", "pref_beta": 0.1, "pref_ftx": 0.1, "finetuning_type": "lora",
           "lora_target": "all", "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.0,
           "learning_rate": 1e-4, "lr_scheduler_type": "constant", "warmup_ratio": 0.0,
           "num_train_epochs": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
           "cutoff_len": 256, "bf16": device == "cuda", "gradient_checkpointing": False, "deepspeed": "",
           "val_size": 0.0, "extra": {"max_steps": 1, "dataloader_num_workers": 0}}
    args = train_args(dpo, model=str(model_dir), dataset="gpucheck", dataset_dir=str(data), template="chatml",
                      output_dir=str(work / "adapter"), seed=0)
    (work / "train.yaml").write_text(dump_yaml(args))
    env_cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # LLaMA-Factory would otherwise pick a visible GPU
    try:
        train(work / "train.yaml", work / "adapter", work / "trainer_log.jsonl", work / "llamafactory.log",
              gpu=device == "cuda")
    finally:
        if device == "cpu":
            if env_cuda is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = env_cuda
    log = read_trainer_log(work / "trainer_log.jsonl")
    losses = [r["loss"] for r in log if "loss" in r]
    if not losses:
        raise AssertionError(f"no loss logged (see {work / 'llamafactory.log'})")
    files = sorted(p.name for p in (work / "adapter").iterdir())
    if "adapter_config.json" not in files:
        raise AssertionError(f"no LoRA adapter written (files: {files})")
    return f"ok: max_steps 1, loss {losses[-1]:.4f}, LoRA adapter written ({len(files)} files)"


def run_checks(device: str = "auto", work: str | os.PathLike | None = None, tokenizer_dir=None,
               skip: tuple[str, ...] = ()) -> list[dict]:
    """Run every check; one dict per table row (component, device, seconds, result, ok)."""
    from .device import check_gpu_job, cuda_device_count, torch_build_cuda

    work = Path(work or tempfile.mkdtemp(prefix="gpucheck-"))
    rows = []
    decided = {}

    def decide() -> str:
        d = check_gpu_job()
        decided["device"] = d
        tv, tc = torch_build_cuda()
        return f"{d} ({cuda_device_count()} visible CUDA device(s); torch {tv}, CUDA build {tc})"

    rows.append(_row("device decision", "-", decide))
    dev = decided.get("device", "cpu") if device == "auto" else device
    if dev == "cuda":
        import torch

        if not torch.cuda.is_available():
            rows.append({"component": "cuda", "device": "cuda", "seconds": 0.0, "ok": False,
                         "result": "FAILED: --device cuda but torch sees no CUDA device"})
            return rows
    model_dir = work / "tiny-llama"
    rows.append(_row("tiny model build", "cpu", lambda: (
        build_tiny_llama(model_dir, seed=0, tokenizer_dir=tokenizer_dir, init_std=0.2),
        f"ok: {sum(p.stat().st_size for p in model_dir.iterdir()) / 2**20:.1f} MiB in {model_dir}")[1]))
    if "engine" not in skip:
        rows.append(_row("transformers engine", dev, lambda: check_engine(model_dir, dev)))
    if "embedder" not in skip:
        rows.append(_row("embedder", dev, lambda: check_embedder(model_dir, dev)))
    if "dpo" not in skip:
        rows.append(_row("LLaMA-Factory DPO step", dev, lambda: check_dpo(model_dir, dev, work / "dpo")))
    return rows


def format_table(rows: list[dict]) -> str:
    """One plain-text table: component | device | seconds | result."""
    head = ("component", "device", "seconds", "result")
    cells = [head] + [(r["component"], r["device"], f"{r['seconds']:.1f}", r["result"]) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    lines = []
    for n, c in enumerate(cells):
        lines.append(" | ".join([c[i].ljust(widths[i]) for i in range(3)] + [c[3]]))
        if n == 0:
            lines.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * 6)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--work", default=None, help="folder for the tiny model and the DPO run (default: a temp dir)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the embedded policy's if present)")
    ap.add_argument("--skip", action="append", default=[], choices=("engine", "embedder", "dpo"))
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    a = ap.parse_args(argv)
    rows = run_checks(a.device, a.work, a.tokenizer, tuple(a.skip))
    print(format_table(rows), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 1 if any(r["ok"] is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

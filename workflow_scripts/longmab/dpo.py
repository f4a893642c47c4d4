"""DPO with LLaMA-Factory (method.md §7): the training / export yaml files and the CLI runs.

The pipeline drives LLaMA-Factory only through ``llamafactory-cli train|export FILE.yaml`` with yaml
files it writes itself (rule outputs a user can read and re-run by hand). Names follow LLaMA-Factory.

Atomicity: training and export write into a temporary sibling folder (``output_dir=`` /
``export_dir=`` overridden on the command line) that is renamed into place only when the run
succeeded, so a failed or interrupted run never leaves a folder that looks finished.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .io import atomic_dir, write_text

log = logging.getLogger("longmab")

#: LLaMA-Factory's loss log and trainer state, both written into ``output_dir``.
TRAINER_LOG = "trainer_log.jsonl"
TRAINER_STATE = "trainer_state.json"

#: ``dpo.*`` config keys that are not LLaMA-Factory arguments of the same name.
_SPECIAL = {"bf16", "gradient_checkpointing", "deepspeed", "val_size", "extra", "effective_batch_size"}


def train_args(
    dpo: Mapping[str, Any],
    *,
    model: str,
    dataset: str,
    dataset_dir: str,
    template: str,
    output_dir: str,
    seed: int,
    default_system: str | None = None,
) -> dict[str, Any]:
    """The LLaMA-Factory training arguments of the DPO stage (one yaml document).

    Parameters
    ----------
    dpo : mapping
        The ``dpo`` section of the config (schema defaults filled). Every key but ``bf16``,
        ``gradient_checkpointing``, ``deepspeed``, ``val_size``, ``effective_batch_size`` and
        ``extra`` is a LLaMA-Factory argument of the same name (``optim: adamw_torch`` and
        ``ddp_timeout: 180000000`` as in the reference's yaml). ``extra`` is merged last, verbatim
        (it may override anything). ``effective_batch_size`` is not written: :func:`train` turns it
        into ``gradient_accumulation_steps`` for the GPUs the job has.
    model : str
        ``model_name_or_path``: the built embedded policy folder, a local folder or a hub id.
    dataset, dataset_dir : str
        The ``dataset_info.json`` entry name and the folder holding it (the pairs folder).
    template : str
        LLaMA-Factory chat template of the policy (``chatml``, ``llama3``, ``qwen``...).
    output_dir : str
        Where the adapter goes (the train step overrides it with a temporary folder).
    seed : int
        Trainer seed (shuffling, LoRA init, validation split).
    default_system : str, optional
        LLaMA-Factory's ``default_system``: the system prompt the template puts before every
        training prompt (``None``: the template's own). Set it to what the tokenizer's chat
        template adds at inference, so that DPO trains on the prompts the evaluation sends
        (:func:`template_parity`).

    Notes
    -----
    - ``bf16: true`` is written only when configured; :func:`device_overrides` keeps it on a CPU
      with native bf16 (adding ``use_cpu``) and turns it off on other CPUs.
    - ``gradient_checkpointing`` maps to LLaMA-Factory's ``disable_gradient_checkpointing``
      (LLaMA-Factory checkpoints by default).
    - ``val_size`` (and an evaluation each epoch) only when > 0.
    - No intermediate checkpoints (``save_strategy: "no"``); the final adapter is always saved.
    """
    args: dict[str, Any] = {
        "stage": "dpo",
        "do_train": True,
        "model_name_or_path": str(model),
        "trust_remote_code": False,
        "dataset": dataset,
        "dataset_dir": str(dataset_dir),
        "template": template,
        **({"default_system": default_system} if default_system is not None else {}),
        "overwrite_cache": True,
    }
    for key, value in dpo.items():
        if key not in _SPECIAL:
            args[key] = value
    args["disable_gradient_checkpointing"] = not bool(dpo.get("gradient_checkpointing", True))
    if dpo.get("bf16"):
        args["bf16"] = True
    if dpo.get("deepspeed"):
        args["deepspeed"] = str(dpo["deepspeed"])
    if float(dpo.get("val_size") or 0) > 0:
        args["val_size"] = float(dpo["val_size"])
        args["per_device_eval_batch_size"] = int(dpo.get("per_device_train_batch_size", 1))
        args["eval_strategy"] = "epoch"
    args.update({
        "output_dir": str(output_dir),
        "overwrite_output_dir": True,
        "logging_steps": 1,
        "plot_loss": True,
        "report_to": "none",
        "save_strategy": "no",
        "seed": int(seed),
    })
    args.update(dict(dpo.get("extra") or {}))
    return args


def export_args(
    *,
    model: str,
    adapter_dir: str,
    template: str,
    finetuning_type: str,
    export_dir: str,
    export_size: int = 5,
    default_system: str | None = None,
) -> dict[str, Any]:
    """LLaMA-Factory export arguments: merge the LoRA adapter into the base model on CPU.

    For ``finetuning_type`` full / freeze the trained folder already is a whole model; the export
    then just re-saves it (same layout for the evaluation).
    """
    args: dict[str, Any] = {"template": template, "trust_remote_code": False}
    if default_system is not None:
        args["default_system"] = default_system
    if finetuning_type == "lora":
        args.update({"model_name_or_path": str(model), "adapter_name_or_path": str(adapter_dir),
                     "finetuning_type": "lora"})
    else:
        args.update({"model_name_or_path": str(adapter_dir), "finetuning_type": finetuning_type})
    args.update({"export_dir": str(export_dir), "export_size": int(export_size), "export_device": "cpu",
                 "export_legacy_format": False})
    return args


def template_parity(model: str, template: str, default_system: str | None = None,
                    message: str = "Question?") -> dict[str, Any]:
    """Does LLaMA-Factory's ``template`` render a prompt exactly as the model's own chat template?

    DPO trains on LLaMA-Factory's rendering; the probe, rollout and evaluation engines send the
    tokenizer's ``apply_chat_template`` rendering. Any difference (a missing default system prompt,
    other separators) means the model is trained on prompts it never sees at evaluation. Returns
    ``{"match": bool, "llamafactory": str, "tokenizer": str}`` (the two renderings of one user
    turn up to the assistant's first token). Needs LLaMA-Factory and the model's tokenizer files.
    """
    import copy

    from llamafactory.data.template import TEMPLATES, get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    ours = tok.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                   add_generation_prompt=True)
    lf_tok = AutoTokenizer.from_pretrained(str(model))
    # LLaMA-Factory's templates are module-level singletons that default_system edits in place
    saved = TEMPLATES.get(template)
    if saved is not None:
        TEMPLATES[template] = copy.deepcopy(saved)
    try:
        tpl = get_template_and_fix_tokenizer(lf_tok, DataArguments(template=template, default_system=default_system))
    finally:
        if saved is not None:
            TEMPLATES[template] = saved
    prompt_ids, _ = tpl.encode_oneturn(lf_tok, [{"role": "user", "content": message},
                                                {"role": "assistant", "content": "x"}])
    theirs = lf_tok.decode(prompt_ids, skip_special_tokens=False)
    # a BOS token the tokenizer adds on encoding is not part of the chat template's text
    if tok.bos_token and theirs.startswith(tok.bos_token) and not ours.startswith(tok.bos_token):
        theirs = theirs[len(tok.bos_token):]
    return {"match": ours == theirs, "llamafactory": theirs, "tokenizer": ours}


def dump_yaml(args: Mapping[str, Any], header: str = "") -> str:
    """YAML text of an argument dict, keys in insertion order (``"no"`` etc. stay quoted strings)."""
    body = yaml.safe_dump(dict(args), sort_keys=False, default_flow_style=False, allow_unicode=True)
    return (header + body) if header else body


def write_yaml(path: str | os.PathLike, args: Mapping[str, Any], header: str = "") -> None:
    """Write ``args`` as a LLaMA-Factory yaml file, atomically."""
    write_text(path, dump_yaml(args, header))


def has_gpu() -> bool:
    """True when this job trains on CUDA (decided without initialising CUDA: :mod:`longmab.device`)."""
    from .device import cuda_available

    return cuda_available()


def visible_gpus() -> int:
    """CUDA devices this job may use (NVML / ``/proc`` and ``CUDA_VISIBLE_DEVICES``; no CUDA call)."""
    from .device import cuda_device_count

    return cuda_device_count()


def _env_enabled(env: Mapping[str, str], name: str) -> bool:
    """LLaMA-Factory's ``is_env_enabled``: ``true``, ``y`` or ``1`` (any case)."""
    return env.get(name, "0").lower() in ("true", "y", "1")


def training_processes(gpus: int, environ: Mapping[str, str] | None = None) -> int:
    """How many training processes ``llamafactory-cli train`` starts, as its launcher decides.

    It launches torchrun when ``FORCE_TORCHRUN`` is set or more than one GPU is visible, with
    ``NNODES`` (default 1) x ``NPROC_PER_NODE`` (default: the visible GPUs) processes; otherwise one
    process (one GPU, or the CPU).

    Parameters
    ----------
    gpus : int
        Visible CUDA devices (0 on the CPU).
    environ : mapping, optional
        The environment LLaMA-Factory runs with (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    if not (_env_enabled(env, "FORCE_TORCHRUN") or gpus > 1):
        return 1
    nnodes = int(env.get("NNODES") or 1)
    nproc = int(env.get("NPROC_PER_NODE") or gpus or 1)
    return max(1, nnodes) * max(1, nproc)


def accumulation_steps(effective_batch_size: int, per_device: int, processes: int) -> int:
    """``gradient_accumulation_steps`` that keeps the global batch at ``effective_batch_size``.

    ``effective_batch_size = per_device x processes x accumulation``.

    Raises
    ------
    ValueError
        When ``per_device x processes`` does not divide ``effective_batch_size`` (the message names
        the config keys and the numbers).
    """
    effective_batch_size, per_device, processes = int(effective_batch_size), int(per_device), int(processes)
    if min(effective_batch_size, per_device, processes) < 1:
        raise ValueError(f"batch sizes must be >= 1 (effective {effective_batch_size}, per device {per_device}, "
                         f"processes {processes})")
    step = per_device * processes
    if effective_batch_size % step:
        raise ValueError(
            f"dpo.effective_batch_size {effective_batch_size} is not a multiple of dpo.per_device_train_batch_size "
            f"{per_device} x {processes} training process(es) = {step}: change one of them (or set "
            "dpo.effective_batch_size: null to train with per_device x processes x gradient_accumulation_steps)"
        )
    return effective_batch_size // step


def batch_overrides(
    args: Mapping[str, Any],
    effective_batch_size: int | None,
    gpus: int,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``gradient_accumulation_steps`` override for the machine the training runs on (logged).

    Parameters
    ----------
    args : mapping
        The training yaml's arguments (``per_device_train_batch_size``, ``gradient_accumulation_steps``).
    effective_batch_size : int or None
        ``dpo.effective_batch_size``; None keeps the yaml's accumulation (nothing is overridden).
    gpus : int
        Visible CUDA devices (0 on the CPU).
    environ : mapping, optional
        The environment LLaMA-Factory runs with (``FORCE_TORCHRUN``, ``NNODES``, ``NPROC_PER_NODE``).

    Returns
    -------
    dict
        ``{"gradient_accumulation_steps": int}``, or ``{}`` when ``effective_batch_size`` is None.
    """
    per_device = int(args.get("per_device_train_batch_size", 1))
    processes = training_processes(gpus, environ)
    if effective_batch_size is None:
        accumulation = int(args.get("gradient_accumulation_steps", 1))
        log.info("DPO batch: %d per device x %d process(es) (%d GPU(s) visible) x accumulation %d = %d "
                 "(dpo.effective_batch_size is null: as configured)", per_device, processes, gpus,
                 accumulation, per_device * processes * accumulation)
        return {}
    accumulation = accumulation_steps(effective_batch_size, per_device, processes)
    log.info("DPO batch: effective %d = %d per device x %d process(es) (%d GPU(s) visible) x accumulation %d",
             int(effective_batch_size), per_device, processes, gpus, accumulation)
    return {"gradient_accumulation_steps": accumulation}


def device_overrides(args: Mapping[str, Any], gpu: bool, cpu_bf16: bool | None = None) -> dict[str, Any]:
    """Command-line overrides for the machine the training runs on.

    Without a GPU, ``bf16`` stays on where the CPU has native bf16 (AMX / AVX512-BF16,
    :func:`longmab.device.native_bf16`; ``cpu_bf16`` overrides the check): LLaMA-Factory then needs
    ``use_cpu: true``, and trains 2x faster than in float32 (bench/README.md, "Embedded budget").
    Otherwise the half-precision flags are switched off (fp32 training) and a warning is logged.
    """
    from .device import native_bf16

    over: dict[str, Any] = {}
    if not gpu:
        if cpu_bf16 is None:
            cpu_bf16 = native_bf16()
        if args.get("bf16") and cpu_bf16 and not args.get("fp16") and not args.get("pure_bf16"):
            log.info("no GPU visible: bf16 autocast on a CPU with native bf16 (use_cpu=true)")
            return {"use_cpu": True}
        for key in ("bf16", "fp16", "pure_bf16"):
            if args.get(key):
                over[key] = False
        if over:
            log.warning("no GPU visible: training in float32 (overriding %s)", ", ".join(f"{k}=false" for k in over))
    return over


def count_pairs(dataset_dir: str | os.PathLike, dataset: str) -> int:
    """Number of non-blank lines in the dataset file that ``dataset_info.json`` names for ``dataset``."""
    dataset_dir = Path(dataset_dir)
    with open(dataset_dir / "dataset_info.json", encoding="utf-8") as fh:
        info = json.load(fh)
    if dataset not in info:
        raise ValueError(f"{dataset_dir / 'dataset_info.json'}: no entry {dataset!r} (has: {sorted(info)})")
    path = dataset_dir / info[dataset]["file_name"]
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def cli_path() -> str:
    """``llamafactory-cli`` next to the running interpreter (a venv / conda env), else on PATH."""
    here = Path(sys.executable).parent / "llamafactory-cli"
    if here.exists():
        return str(here)
    found = shutil.which("llamafactory-cli")
    if not found:
        raise FileNotFoundError("llamafactory-cli not found (pip install llamafactory==0.9.5)")
    return found


def run_cli(command: str, yaml_path: str | os.PathLike, overrides: Mapping[str, Any], log_path: str | os.PathLike,
            env: Mapping[str, str] | None = None) -> None:
    """Run ``llamafactory-cli COMMAND YAML key=value ...``, appending its output to ``log_path``.

    Raises
    ------
    RuntimeError
        On a non-zero exit, with the last lines of the output.
    """
    def fmt(v: Any) -> str:
        return str(v).lower() if isinstance(v, bool) else str(v)

    cmd = [cli_path(), command, str(yaml_path), *(f"{k}={fmt(v)}" for k, v in overrides.items())]
    full_env = dict(os.environ)
    full_env.setdefault("DISABLE_VERSION_CHECK", "1")
    full_env.setdefault("TOKENIZERS_PARALLELISM", "false")
    full_env.update(env or {})
    log.info("running: %s", " ".join(cmd))
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=full_env, check=False)
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            tail = "".join(fh.readlines()[-30:])
        raise RuntimeError(f"llamafactory-cli {command} failed (exit {proc.returncode}); see {log_path}:\n{tail}")


def _remove_stale(path: Path) -> None:
    """Remove temporary siblings (``.NAME.*``) left by a killed earlier run of the same output."""
    for stale in path.parent.glob(f".{path.name}.*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def train(
    yaml_path: str | os.PathLike,
    adapter_dir: str | os.PathLike,
    trainer_log: str | os.PathLike,
    log_path: str | os.PathLike,
    gpu: bool | None = None,
    effective_batch_size: int | None = None,
    gpus: int | None = None,
) -> dict:
    """Run the DPO training of ``yaml_path`` into ``adapter_dir`` (atomically).

    ``trainer_log`` receives a copy of LLaMA-Factory's ``trainer_log.jsonl`` (one line per logged
    step: ``loss``, ``reward``, ``accuracy``, ``lr``, ``epoch``...). Refuses to start when the
    dataset has no pairs. Returns the effective overrides.

    Parameters
    ----------
    gpu : bool, optional
        Train on CUDA; default: decided without initialising CUDA (:func:`has_gpu`).
    effective_batch_size : int, optional
        ``dpo.effective_batch_size`` (paper 4): ``gradient_accumulation_steps`` is derived from it
        and the training processes the job really has (:func:`batch_overrides`) and passed on the
        command line. None: the yaml's accumulation.
    gpus : int, optional
        Visible CUDA devices; default: counted (:func:`visible_gpus`), 0 when ``gpu`` is false.
    """
    with open(yaml_path, encoding="utf-8") as fh:
        args = yaml.safe_load(fh)
    n = count_pairs(args["dataset_dir"], args["dataset"])
    if n == 0:
        raise ValueError(
            f"no preference pairs in {args['dataset_dir']} (every sample was dropped or tied; see stats.json "
            "there): nothing to train on. More samples, more rollout rounds or a longer max_tokens help."
        )
    log.info("DPO: %d pairs from %s", n, args["dataset_dir"])
    adapter_dir = Path(adapter_dir)
    _remove_stale(adapter_dir)
    gpu = has_gpu() if gpu is None else bool(gpu)
    if not gpu:
        gpus = 0
    elif gpus is None:
        gpus = visible_gpus()
    from .device import llamafactory_env

    env = llamafactory_env(args, "cuda" if gpu else "cpu")  # FORCE_TORCHRUN for DeepSpeed on one GPU
    overrides = device_overrides(args, gpu)
    overrides.update(batch_overrides(args, effective_batch_size, gpus, {**os.environ, **env}))
    with atomic_dir(adapter_dir) as tmp:
        os.chmod(tmp, 0o755)
        run_cli("train", yaml_path, {**overrides, "output_dir": str(tmp)}, log_path, env=env)
        if not (tmp / TRAINER_LOG).exists():
            raise RuntimeError(f"LLaMA-Factory wrote no {TRAINER_LOG} in {tmp}")
    write_text(trainer_log, (adapter_dir / TRAINER_LOG).read_text(encoding="utf-8"))
    return overrides


def export(
    yaml_path: str | os.PathLike,
    merged_dir: str | os.PathLike,
    log_path: str | os.PathLike,
) -> None:
    """Run ``llamafactory-cli export`` of ``yaml_path`` into ``merged_dir`` (atomically)."""
    merged_dir = Path(merged_dir)
    _remove_stale(merged_dir)
    with atomic_dir(merged_dir) as tmp:
        os.chmod(tmp, 0o755)
        run_cli("export", yaml_path, {"export_dir": str(tmp)}, log_path)
        if not (tmp / "config.json").exists():
            raise RuntimeError(f"llamafactory-cli export wrote no config.json in {tmp}")


def read_trainer_log(path: str | os.PathLike) -> list[dict]:
    """Rows of a LLaMA-Factory ``trainer_log.jsonl`` (or the ``log_history`` of ``trainer_state.json``)."""
    path = Path(path)
    if path.name.endswith(".json"):
        with open(path, encoding="utf-8") as fh:
            return list(json.load(fh).get("log_history", []))
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
    return rows

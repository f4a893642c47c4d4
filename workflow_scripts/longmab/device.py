"""CPU or CUDA, decided without initialising CUDA; and a clear error when a GPU job has no usable GPU.

Why not ``torch.cuda.is_available()``: without ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` it calls
``cudaGetDeviceCount``, which runs ``cuInit`` in the calling process and poisons later ``fork()``s:
vLLM's engine then forks its worker and dies with "Cannot re-initialize CUDA in forked subprocess"
(vLLM issues #8893, #12754). Here the device count comes from NVML (``libnvidia-ml.so.1``, the
library ``nvidia-smi`` uses; it never creates a CUDA context), else from ``/proc/driver/nvidia/gpus``,
and is trimmed by ``CUDA_VISIBLE_DEVICES`` (same parsing rules as torch: a list of ordinals, or of
``GPU-``/``MIG-`` UUIDs; an empty value hides every device). Whether torch was built with CUDA is read
from ``torch.version`` (no CUDA call; read from the file without importing torch when torch is not
imported yet).

A job *asked for* a GPU when SLURM gave it one (``SLURM_JOB_GPUS``, ``SLURM_STEP_GPUS``,
``SLURM_GPUS_ON_NODE``, ``SLURM_GPUS``) or ``LONGMAB_REQUIRE_GPU=1``; ``LONGMAB_REQUIRE_GPU=0`` turns
the check off. :func:`check_gpu_job` then refuses to fall back to the CPU silently: it raises
:class:`GPUUnavailableError` naming what is wrong (CPU-only torch build, no visible device, or an NVIDIA
driver too old for the CUDA version torch was built for, with both versions).

All probes are injectable (``probe=``), so the "a GPU is present" branches are unit tested on a
machine without one.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: Oldest Linux driver that runs a CUDA toolkit of each major version (NVIDIA's CUDA compatibility
#: guide, "Minor Version Compatibility", table 1: 11.x >= 450.80.02, 12.x >= 525, 13.x >= 580).
MIN_DRIVER_FOR_CUDA_MAJOR: dict[int, tuple[int, ...]] = {
    11: (450, 80, 2),
    12: (525, 60, 13),
    13: (580,),
}

#: SLURM variables that say the job (or step) was given GPUs.
SLURM_GPU_VARS = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_GPUS")


class GPUUnavailableError(RuntimeError):
    """A job that asked for a GPU cannot use one (the message says why and what to do)."""


# --------------------------------------------------------------------------------------------------
# probes (no CUDA initialisation anywhere)
# --------------------------------------------------------------------------------------------------


def _nvml():
    try:
        lib = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if lib.nvmlInit_v2() != 0:
        return None
    return lib


def nvml_device_count() -> int:
    """Devices NVML reports (all of the node's, ignoring ``CUDA_VISIBLE_DEVICES``); -1 without NVML."""
    lib = _nvml()
    if lib is None:
        return -1
    n = ctypes.c_uint(0)
    return int(n.value) if lib.nvmlDeviceGetCount_v2(ctypes.byref(n)) == 0 else -1


def proc_device_count(root: str | os.PathLike = "/proc/driver/nvidia/gpus") -> int:
    """Entries in ``/proc/driver/nvidia/gpus`` (one per GPU of the node); -1 when the folder is absent."""
    root = Path(root)
    return len([p for p in root.iterdir() if p.is_dir()]) if root.is_dir() else -1


def nvml_driver_version() -> str | None:
    """The NVIDIA driver version (``"580.65.06"``) from NVML, else ``/proc/driver/nvidia/version``."""
    lib = _nvml()
    if lib is not None:
        buf = ctypes.create_string_buffer(96)
        if lib.nvmlSystemGetDriverVersion(buf, ctypes.c_uint(96)) == 0:
            return buf.value.decode()
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    m = re.search(r"Kernel Module(?: for x86_64)?\s+(\d+(?:\.\d+)+)", text)
    return m.group(1) if m else None


def torch_build_cuda() -> tuple[str | None, str | None]:
    """(torch version, CUDA version torch was built for or None for a CPU build); (None, None) when
    torch is not installed. Never imports torch when it is not imported yet (reads torch/version.py)."""
    mod = sys.modules.get("torch")
    if mod is not None and getattr(mod, "version", None) is not None:
        return str(mod.__version__), getattr(mod.version, "cuda", None)
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None, None
    path = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        text = path.read_text()
    except OSError:
        return None, None
    version = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    cuda = re.search(r"^cuda\s*(?::\s*[^=]+)?=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return (version.group(1) if version else None), (cuda.group(1) if cuda else None)


@dataclass
class Probe:
    """Where the facts come from (replace fields in tests)."""

    nvml_count: object = nvml_device_count
    proc_count: object = proc_device_count
    driver_version: object = nvml_driver_version
    torch_build: object = torch_build_cuda


# --------------------------------------------------------------------------------------------------
# decisions
# --------------------------------------------------------------------------------------------------


def visible_entries(value: str | None) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` as the CUDA runtime reads it: None when unset (all devices), else the
    entries up to the first invalid one (a negative ordinal or a non-number ends the list; a repeated
    entry makes the whole list empty; ``GPU-``/``MIG-`` UUIDs are kept as strings)."""
    if value is None:
        return None
    out: list[str] = []
    for raw in value.split(","):
        item = raw.strip()
        if item.startswith(("GPU-", "MIG-")):
            pass
        else:
            m = re.match(r"[+]?\d+", item)
            if not m:
                break
            item = str(int(m.group(0)))
        if item in out:
            return []
        out.append(item)
    return out


def cuda_device_count(environ: Mapping[str, str] | None = None, probe: Probe | None = None) -> int:
    """Number of CUDA devices this process may use, decided WITHOUT initialising CUDA.

    NVML's count (else ``/proc/driver/nvidia/gpus``'s), trimmed by ``CUDA_VISIBLE_DEVICES``; 0 when
    neither source exists (no NVIDIA driver) or the variable hides every device.
    """
    env = os.environ if environ is None else environ
    probe = probe or Probe()
    visible = visible_entries(env.get("CUDA_VISIBLE_DEVICES"))
    if visible == []:
        return 0
    n = int(probe.nvml_count())
    if n < 0:
        n = int(probe.proc_count())
    if n <= 0:
        return 0
    if visible is None:
        return n
    if all(v.isdigit() for v in visible):
        # ordinals beyond the node's devices end the list (as the CUDA runtime does)
        count = 0
        for v in visible:
            if int(v) >= n:
                break
            count += 1
        return count
    return min(len(visible), n)


def gpu_requested(environ: Mapping[str, str] | None = None) -> str | None:
    """Why this job must have a GPU (``"SLURM_JOB_GPUS=0"``), or None when it need not."""
    env = os.environ if environ is None else environ
    flag = env.get("LONGMAB_REQUIRE_GPU", "").strip().lower()
    if flag in ("0", "false", "no"):
        return None
    if flag in ("1", "true", "yes"):
        return "LONGMAB_REQUIRE_GPU=1"
    for var in SLURM_GPU_VARS:
        value = env.get(var, "").strip()
        if not value or value in ("(null)", "N/A"):
            continue
        # SLURM_JOB_GPUS / SLURM_STEP_GPUS list GPU indices ("0" is GPU 0); the others are counts
        # ("0" = none; SLURM_GPUS may read "a100:1").
        if var in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS") and value.rsplit(":", 1)[-1] == "0":
            continue
        return f"{var}={value}"
    return None


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text))


def driver_problem(driver: str | None, torch_cuda: str | None) -> str | None:
    """Why the NVIDIA ``driver`` cannot run torch built for CUDA ``torch_cuda`` (None when it can or
    when either version is unknown)."""
    if not driver or not torch_cuda:
        return None
    major = _version_tuple(torch_cuda)[0]
    need = MIN_DRIVER_FOR_CUDA_MAJOR.get(major)
    if need is None:
        return None
    if _version_tuple(driver) < need:
        return (
            f"the NVIDIA driver {driver} is older than {'.'.join(map(str, need))}, the oldest that runs "
            f"CUDA {major}.x; torch is built for CUDA {torch_cuda}"
        )
    return None


def check_gpu_job(environ: Mapping[str, str] | None = None, probe: Probe | None = None) -> str:
    """``"cuda"`` or ``"cpu"`` for this process; raises when a job that asked for a GPU cannot use one.

    Decided without initialising CUDA (see the module docstring), so it is safe before vLLM forks.

    Raises
    ------
    GPUUnavailableError
        The job asked for a GPU (:func:`gpu_requested`) but torch is a CPU-only build, no CUDA
        device is visible, or the driver is too old for torch's CUDA version. Set
        ``LONGMAB_REQUIRE_GPU=0`` to run on the CPU anyway.
    """
    env = os.environ if environ is None else environ
    probe = probe or Probe()
    torch_version, torch_cuda = probe.torch_build()
    n = cuda_device_count(env, probe)
    reason = gpu_requested(env)
    driver = probe.driver_version() if (n > 0 or reason) else None
    problem = None
    if n > 0 and torch_cuda is None:
        problem = f"torch {torch_version} is a CPU-only build (torch.version.cuda is None)"
    elif n > 0:
        problem = driver_problem(driver, torch_cuda)
    elif reason:
        problem = (
            f"no CUDA device is visible (CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r}, "
            f"NVIDIA driver {driver or 'not found'}); torch {torch_version} is built for "
            f"{'CUDA ' + torch_cuda if torch_cuda else 'the CPU only'}"
        )
    if problem and reason:
        raise GPUUnavailableError(
            f"this job asked for a GPU ({reason}) but cannot use one: {problem}. The pinned torch 2.13.0 "
            "from PyPI is built for CUDA 13.0 and needs NVIDIA driver >= 580 (docs/hpc.md, 'GPU driver'); "
            "set LONGMAB_REQUIRE_GPU=0 to run on the CPU anyway."
        )
    if problem:
        return "cpu"  # a GPU is there but unusable and nobody asked for it: the CPU, as before
    return "cuda" if n > 0 else "cpu"


def llamafactory_env(args: Mapping[str, object], device: str) -> dict[str, str]:
    """Environment for ``llamafactory-cli train`` with training arguments ``args`` on ``device``.

    LLaMA-Factory launches torchrun by itself only when it sees more than one GPU, and refuses a
    DeepSpeed config without torchrun ("Please use `FORCE_TORCHRUN=1` to launch DeepSpeed
    training"): a one-GPU DeepSpeed run therefore needs ``FORCE_TORCHRUN=1``, which is harmless
    with more GPUs. Nothing is needed on the CPU or without DeepSpeed.
    """
    return {"FORCE_TORCHRUN": "1"} if device == "cuda" and args.get("deepspeed") else {}


def cuda_available(environ: Mapping[str, str] | None = None, probe: Probe | None = None) -> bool:
    """True when :func:`check_gpu_job` picks CUDA (never initialises CUDA)."""
    return check_gpu_job(environ, probe) == "cuda"


__all__ = [
    "GPUUnavailableError",
    "MIN_DRIVER_FOR_CUDA_MAJOR",
    "Probe",
    "check_gpu_job",
    "cuda_available",
    "cuda_device_count",
    "driver_problem",
    "gpu_requested",
    "llamafactory_env",
    "torch_build_cuda",
    "visible_entries",
]


def native_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """True when the CPU has bf16 matrix instructions (AMX-BF16 or AVX512-BF16).

    There, bf16 autocast trains and generates 2-3.6x faster than float32 (bench/README.md,
    "Embedded budget": warm-up, DPO and vLLM on one Xeon core); elsewhere it is emulated and slow.
    """
    try:
        flags = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))

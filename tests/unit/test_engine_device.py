"""CPU vs CUDA without initialising CUDA, the GPU-job check, engine.vllm reaching vllm.LLM, and the
transformers engine's device placement (CPU outputs pinned to what they were before GPU support).

No GPU here: the "a GPU is present" branches use injected probes (NVML count, driver, torch build);
the CPU branches use the real probes of this machine (no libnvidia-ml, no /proc/driver/nvidia).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml
from longmab import device
from longmab.config import load_config, load_schema
from longmab.device import GPUUnavailableError, Probe, check_gpu_job, cuda_device_count, visible_entries

REPO = Path(__file__).resolve().parents[2]
NO_SLURM = {}  # an environment without any GPU request


def fake_probe(n=1, driver="580.65.06", torch_cuda="13.0", torch_version="2.13.0+cu130", proc=-1):
    return Probe(nvml_count=lambda: n, proc_count=lambda: proc, driver_version=lambda: driver,
                 torch_build=lambda: (torch_version, torch_cuda))


# --- the decision never initialises CUDA ------------------------------------------------------------


@pytest.fixture
def cuda_tripwires(monkeypatch):
    """Every torch call that would initialise CUDA (or poison fork) raises."""
    import torch

    def boom(*a, **k):
        raise AssertionError("CUDA was touched: the decision must not initialise CUDA")

    for name in ("is_available", "init", "_lazy_init", "device_count", "current_device", "get_device_name"):
        monkeypatch.setattr(torch.cuda, name, boom)
    monkeypatch.setattr(torch._C, "_cuda_getDeviceCount", boom, raising=False)
    monkeypatch.setattr(torch._C, "_cuda_init", boom, raising=False)
    return torch


def test_decision_does_not_touch_cuda_cpu_branch(cuda_tripwires, monkeypatch):
    from longmab.engines.base import _has_cuda

    for var in ("CUDA_VISIBLE_DEVICES", "LONGMAB_REQUIRE_GPU", *device.SLURM_GPU_VARS):
        monkeypatch.delenv(var, raising=False)
    assert _has_cuda() is False  # real probes: no NVML, no /proc/driver/nvidia here
    assert device.check_gpu_job() == "cpu"
    assert cuda_tripwires.cuda.is_initialized() is False


def test_decision_does_not_touch_cuda_gpu_branch(cuda_tripwires):
    env = {"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_GPUS": "0"}
    assert check_gpu_job(env, fake_probe(n=1)) == "cuda"
    assert cuda_device_count(env, fake_probe(n=4)) == 1
    assert cuda_tripwires.cuda.is_initialized() is False


def test_engine_decision_in_a_fresh_process_imports_no_torch():
    """The whole decision (as the vLLM engine makes it before importing vLLM) in a new interpreter:
    torch is not even imported, so CUDA cannot have been initialised before vLLM forks."""
    code = ("import sys; from longmab.engines.base import _has_cuda; r = _has_cuda(); "
            "print(r, 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "LONGMAB_REQUIRE_GPU")}
    env["PYTHONPATH"] = str(REPO / "workflow_scripts")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


def test_torch_build_read_without_import():
    import torch

    version, cuda = device.torch_build_cuda()
    assert version == torch.__version__ and cuda == torch.version.cuda


# --- device counting --------------------------------------------------------------------------------


@pytest.mark.parametrize("value, want", [
    (None, None), ("", []), ("0", ["0"]), ("0,1", ["0", "1"]), ("1,-1,0", ["1"]), ("0,0", []),
    ("GPU-ab12,GPU-cd34", ["GPU-ab12", "GPU-cd34"]), ("MIG-1", ["MIG-1"]), ("x", []), ("2gpu", ["2"]),
])
def test_visible_entries(value, want):
    assert visible_entries(value) == want


@pytest.mark.parametrize("env, nvml, proc, want", [
    ({}, 2, -1, 2),                                   # all NVML devices
    ({}, -1, 3, 3),                                   # no NVML: /proc/driver/nvidia/gpus
    ({}, -1, -1, 0),                                  # no driver at all
    ({"CUDA_VISIBLE_DEVICES": ""}, 4, -1, 0),         # hidden
    ({"CUDA_VISIBLE_DEVICES": "-1"}, 4, -1, 0),
    ({"CUDA_VISIBLE_DEVICES": "1"}, 4, -1, 1),        # SLURM's one GPU of four
    ({"CUDA_VISIBLE_DEVICES": "0,1,5"}, 2, -1, 2),    # ordinal 5 does not exist: the list ends
    ({"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b"}, 4, -1, 2),
])
def test_cuda_device_count(env, nvml, proc, want):
    assert cuda_device_count(env, fake_probe(n=nvml, proc=proc)) == want


def test_proc_device_count(tmp_path):
    assert device.proc_device_count(tmp_path / "absent") == -1
    for bus in ("0000:01:00.0", "0000:41:00.0"):
        (tmp_path / bus).mkdir()
    assert device.proc_device_count(tmp_path) == 2


# --- the GPU job check --------------------------------------------------------------------------------


def test_gpu_requested():
    assert device.gpu_requested({}) is None
    assert device.gpu_requested({"SLURM_JOB_GPUS": "0"}) == "SLURM_JOB_GPUS=0"
    assert device.gpu_requested({"SLURM_GPUS_ON_NODE": "0"}) is None  # zero GPUs on the node
    assert device.gpu_requested({"LONGMAB_REQUIRE_GPU": "1"}) == "LONGMAB_REQUIRE_GPU=1"
    assert device.gpu_requested({"LONGMAB_REQUIRE_GPU": "0", "SLURM_JOB_GPUS": "0"}) is None


def test_gpu_job_without_a_visible_gpu_fails_clearly():
    env = {"SLURM_JOB_GPUS": "3", "CUDA_VISIBLE_DEVICES": ""}
    with pytest.raises(GPUUnavailableError) as err:
        check_gpu_job(env, fake_probe(n=4, driver="580.65.06"))
    msg = str(err.value)
    assert "SLURM_JOB_GPUS=3" in msg and "no CUDA device is visible" in msg and "CUDA 13.0" in msg
    assert "LONGMAB_REQUIRE_GPU=0" in msg


def test_gpu_job_with_cpu_torch_fails_clearly():
    env = {"SLURM_JOB_GPUS": "0", "CUDA_VISIBLE_DEVICES": "0"}
    with pytest.raises(GPUUnavailableError, match=r"torch 2.13.0\+cpu is a CPU-only build"):
        check_gpu_job(env, fake_probe(n=1, torch_cuda=None, torch_version="2.13.0+cpu"))


def test_gpu_job_with_an_old_driver_names_both_versions():
    env = {"SLURM_JOB_GPUS": "0", "CUDA_VISIBLE_DEVICES": "0"}
    with pytest.raises(GPUUnavailableError) as err:
        check_gpu_job(env, fake_probe(n=1, driver="535.104.05", torch_cuda="13.0"))
    msg = str(err.value)
    assert "535.104.05" in msg and "580" in msg and "CUDA 13.0" in msg
    # the same driver runs a CUDA 12 build
    assert check_gpu_job(env, fake_probe(n=1, driver="535.104.05", torch_cuda="12.8")) == "cuda"


def test_unrequested_unusable_gpu_falls_back_to_cpu():
    assert check_gpu_job({}, fake_probe(n=1, torch_cuda=None)) == "cpu"
    assert check_gpu_job({"LONGMAB_REQUIRE_GPU": "0", "SLURM_JOB_GPUS": "0"},
                         fake_probe(n=0)) == "cpu"


def test_driver_problem_table():
    assert device.driver_problem("580.65.06", "13.0") is None
    assert device.driver_problem("575.57.08", "13.0") is not None
    assert device.driver_problem("525.60.13", "12.1") is None
    assert device.driver_problem("520.61.05", "12.1") is not None
    assert device.driver_problem(None, "13.0") is None and device.driver_problem("580.1", None) is None


def test_llamafactory_env_forces_torchrun_for_deepspeed_on_gpu():
    assert device.llamafactory_env({"deepspeed": "configs/ds_z2_config.json"}, "cuda") == {"FORCE_TORCHRUN": "1"}
    assert device.llamafactory_env({"deepspeed": "configs/ds_z2_config.json"}, "cpu") == {}
    assert device.llamafactory_env({}, "cuda") == {}


# --- engine.vllm: schema names are vllm.EngineArgs fields ----------------------------------------------


def engine_args_fields() -> set[str]:
    """Field names of the installed vllm.EngineArgs, read from its source (no vLLM import)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None:
        pytest.skip("vllm not installed")
    src = Path(next(iter(spec.submodule_search_locations))) / "engine" / "arg_utils.py"
    tree = ast.parse(src.read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "EngineArgs")
    return {s.target.id for s in cls.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}


def test_schema_vllm_names_are_engine_args_fields():
    fields = engine_args_fields()
    assert {"tensor_parallel_size", "gpu_memory_utilization", "max_num_seqs", "hf_overrides"} <= fields
    assert "swap_space" not in fields, "negative control: a pre-V1 name must be rejected"
    schema = load_schema()
    for where in (schema["properties"]["engine"]["properties"]["vllm"], schema["properties"]["eval"]["properties"]["vllm"]):
        names = set(where["properties"])
        assert names and names <= fields, f"not vllm.EngineArgs fields: {sorted(names - fields)}"
        assert where["additionalProperties"] is False, "a typo must fail validation"


def test_schema_rejects_a_typo_in_engine_vllm():
    from longmab.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match=r"engine\.vllm"):
        validate_config({"engine": {"vllm": {"max_num_seq": 4}}}, load_schema())
    cfg = validate_config({"engine": {"vllm": {"max_num_seqs": 4, "enable_prefix_caching": True}}}, load_schema())
    assert cfg["engine"]["vllm"] == {"max_num_seqs": 4, "enable_prefix_caching": True}


def test_check_vllm_args():
    from longmab.engines import check_vllm_args

    assert check_vllm_args(None) == {}
    assert check_vllm_args({"max_num_seqs": 4}, allowed={"max_num_seqs"}) == {"max_num_seqs": 4}
    with pytest.raises(ValueError, match=r"engine\.vllm\.dtype': set it with its own key"):
        check_vllm_args({"dtype": "float16"})
    with pytest.raises(ValueError, match=r"engine\.vllm\.swap_space': not a vllm\.EngineArgs field"):
        check_vllm_args({"swap_space": 4}, allowed=engine_args_fields())


# --- engine.vllm reaches vllm.LLM ------------------------------------------------------------------------


@pytest.fixture
def fake_vllm(monkeypatch):
    """A stand-in ``vllm`` module whose LLM records its keyword arguments and the environment."""
    seen = {}

    class LLM:
        def __init__(self, **kwargs):
            seen["kwargs"] = kwargs
            seen["env"] = {k: os.environ.get(k) for k in ("VLLM_WORKER_MULTIPROC_METHOD", "VLLM_CPU_KVCACHE_SPACE")}

        def get_tokenizer(self):
            return None

    mod = types.ModuleType("vllm")
    mod.LLM = LLM
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD", raising=False)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    return seen


def test_engine_vllm_reaches_llm_on_cpu(fake_vllm, tmp_path):
    from longmab.engines import make_engine

    hf = {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192}}
    make_engine("vllm", str(tmp_path), dtype="float32", max_model_len=4096, seed=3,
                vllm={"max_num_seqs": 4, "enforce_eager": False, "hf_overrides": hf})
    kw = fake_vllm["kwargs"]
    assert kw["model"] == str(tmp_path) and kw["seed"] == 3 and kw["max_model_len"] == 4096
    assert kw["max_num_seqs"] == 4 and kw["hf_overrides"] == hf
    assert kw["enforce_eager"] is False, "the config wins over the CPU default"
    assert kw["enable_chunked_prefill"] is False  # CPU default kept
    assert fake_vllm["env"] == {"VLLM_WORKER_MULTIPROC_METHOD": "spawn", "VLLM_CPU_KVCACHE_SPACE": "4"}


def test_engine_vllm_on_gpu_sets_spawn_and_no_cpu_defaults(fake_vllm, tmp_path, monkeypatch):
    import longmab.engines as engine
    from longmab.engines import base

    monkeypatch.setattr(base, "_has_cuda", lambda: True)
    engine.make_engine("vllm", str(tmp_path), dtype="bfloat16", max_model_len=131072, seed=0,
                       vllm={"tensor_parallel_size": 2, "gpu_memory_utilization": 0.85})
    kw = fake_vllm["kwargs"]
    assert (kw["tensor_parallel_size"], kw["gpu_memory_utilization"]) == (2, 0.85)
    assert "enforce_eager" not in kw and "enable_chunked_prefill" not in kw
    assert fake_vllm["env"] == {"VLLM_WORKER_MULTIPROC_METHOD": "spawn", "VLLM_CPU_KVCACHE_SPACE": None}


def test_engine_vllm_keeps_a_users_start_method(fake_vllm, tmp_path, monkeypatch):
    from longmab.engines import make_engine

    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "fork")
    make_engine("vllm", str(tmp_path), dtype="float32", max_model_len=2048)
    assert fake_vllm["env"]["VLLM_WORKER_MULTIPROC_METHOD"] == "fork"


def test_engine_vllm_refuses_reserved_names(fake_vllm, tmp_path):
    from longmab.engines import make_engine

    with pytest.raises(ValueError, match="max_model_len"):
        make_engine("vllm", str(tmp_path), vllm={"max_model_len": 100})
    assert "kwargs" not in fake_vllm


def test_gpu_job_without_gpu_stops_before_vllm(fake_vllm, tmp_path, monkeypatch):
    from longmab.engines import make_engine

    monkeypatch.setenv("LONGMAB_REQUIRE_GPU", "1")
    with pytest.raises(GPUUnavailableError):
        make_engine("vllm", str(tmp_path), max_model_len=2048)
    assert "kwargs" not in fake_vllm, "vLLM must not start on the CPU for a GPU job"


# --- engine settings per stage (eval overrides) --------------------------------------------------------


def test_engine_settings_qwen_evaluates_at_the_papers_window():
    from longmab.engines import engine_settings

    cfg = load_config(REPO / "configs" / "paper-qwen2.yaml")
    probe, ev = engine_settings(cfg, "probe"), engine_settings(cfg, "eval")
    assert probe["max_model_len"] == 32768 and "hf_overrides" not in probe["vllm"]
    assert ev["max_model_len"] >= cfg["eval"]["max_input_len"] + cfg["eval"]["max_tokens"]
    rope = ev["vllm"]["hf_overrides"]["rope_parameters"]
    assert rope["rope_type"] == "yarn" and rope["factor"] * rope["original_max_position_embeddings"] >= ev["max_model_len"]
    assert ev["vllm"]["tensor_parallel_size"] == probe["vllm"]["tensor_parallel_size"]  # merged, not replaced
    llama = load_config(REPO / "configs" / "paper-llama3.yaml")
    assert engine_settings(llama, "eval") == engine_settings(llama, "rollout")


def test_paper_configs_engine_vllm_validate_against_engine_args():
    fields = engine_args_fields()
    for name in ("paper-llama3", "paper-qwen2"):
        raw = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
        keys = set(raw["engine"].get("vllm") or {}) | set(raw["eval"].get("vllm") or {})
        assert keys and keys <= fields, (name, keys - fields)


# --- transformers engine: device placement, CPU outputs unchanged ----------------------------------------

#: HFEngine outputs on the tiny model below, recorded with the engine as it was before GPU support
#: (commit 938af83): token ids per request, and the sha256 of every decoded string.
GOLDEN_IDS = {
    "sampled": [[200, 186, 125, 212, 258, 112, 12, 138, 36, 18, 98, 24, 220, 227, 137, 46],
                [127, 80, 81, 165, 77, 123, 100, 179, 87, 146, 53, 103, 23, 62, 70, 217],
                [82, 21, 205, 107, 210, 77, 210, 178, 16, 142, 156, 106, 244, 33, 132, 46]],
    "greedy": [[123, 43, 211, 70, 156, 132, 134, 41, 179, 138, 199, 53, 119, 123, 92, 150],
               [127, 132, 72, 231, 3, 179, 211, 46, 44, 186, 52, 222, 166, 210, 160, 166],
               [82, 39, 16, 132, 43, 11, 199, 40, 82, 166, 132, 91, 156, 92, 46, 5]],
}
GOLDEN_TEXT_SHA256 = "1298e8864224c0f8c73314b215e22626e232a0b39c08d11888f5b4292ba0c644"
CONVS = [[{"role": "user", "content": "Where was Ada born?"}],
         [{"role": "system", "content": "Answer briefly."},
          {"role": "user", "content": "Which year was the town founded? Think."}],
         [{"role": "user", "content": "Name a colour."}]]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from longmab.gpucheck import build_tiny_llama, byte_level_chatml_tokenizer

    d = tmp_path_factory.mktemp("tiny")
    byte_level_chatml_tokenizer().save_pretrained(d / "tok")
    return build_tiny_llama(d / "model", seed=0, tokenizer_dir=d / "tok", init_std=0.5)


def test_hf_engine_cpu_outputs_unchanged(tiny_model):
    from longmab.engines import HFEngine, SamplingConfig

    sampled = SamplingConfig(temperature=1.0, top_p=0.9, presence_penalty=1.0, max_tokens=16)
    greedy = SamplingConfig(temperature=0.0, presence_penalty=0.5, max_tokens=16)
    texts = {}
    for bs in (1, 3):
        eng = HFEngine(str(tiny_model), dtype="float32", max_model_len=512, seed=0, batch_size=bs)
        assert eng.device.type == "cpu" and eng.model.device.type == "cpu"  # auto: no GPU here
        prompts = [eng.encode_conversation(c) for c in CONVS]
        for name, s, seeds in (("sampled", sampled, [5, 6, 7]), ("greedy", greedy, [0, 0, 0])):
            texts[f"{name}_bs{bs}"] = eng.generate(CONVS, s, seeds)
            ids = (eng._generate_batch(prompts, s, seeds) if bs == 3
                   else [eng._generate_batch([p], s, [sd])[0] for p, sd in zip(prompts, seeds)])
            assert ids == GOLDEN_IDS[name], (name, bs)
        eng.close()
    digest = hashlib.sha256(json.dumps(texts, sort_keys=True).encode()).hexdigest()
    assert digest == GOLDEN_TEXT_SHA256


def test_hf_engine_explicit_cpu_device_and_generators(tiny_model, monkeypatch):
    import torch
    from longmab.engines import HFEngine, SamplingConfig

    made = []
    real = torch.Generator

    def spy(*a, **k):
        made.append(k.get("device"))
        return real(*a, **k)

    eng = HFEngine(str(tiny_model), dtype="float32", max_model_len=512, device="cpu")
    monkeypatch.setattr(torch, "Generator", spy)
    eng.generate(CONVS[:2], SamplingConfig(temperature=1.0, max_tokens=4), [1, 2])
    assert [torch.device(d).type for d in made] == ["cpu", "cpu"]  # one generator per request, on the model's device


def test_hf_engine_picks_cuda_when_the_decision_says_so(tiny_model, monkeypatch):
    """With a (simulated) usable GPU the engine moves the model to CUDA: here .to('cuda') is caught."""
    import longmab.engines as engine
    from longmab.engines import base

    monkeypatch.setattr(base, "_has_cuda", lambda: True)
    targets = []
    from transformers import PreTrainedModel

    def fake_to(self, *args, **kwargs):
        targets.append(args[0] if args else kwargs.get("device"))
        return self

    monkeypatch.setattr(PreTrainedModel, "to", fake_to)
    engine.HFEngine(str(tiny_model), dtype="float32", max_model_len=512)
    assert targets == ["cuda"]


# --- real vLLM (slow) ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_yarn_hf_overrides_extend_the_window_in_vllm(tiny_model):
    """vLLM 0.28's own config code accepts a window beyond the model's native one only with the
    YaRN hf_overrides of the shape configs/paper-qwen2.yaml uses."""
    pytest.importorskip("vllm")
    from vllm.engine.arg_utils import EngineArgs

    native = json.loads((tiny_model / "config.json").read_text())["max_position_embeddings"]
    rope = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": native, "rope_theta": 10000.0}
    cfg = EngineArgs(model=str(tiny_model), max_model_len=4 * native, hf_overrides={"rope_parameters": rope},
                     enforce_eager=True).create_model_config()
    assert cfg.max_model_len == 4 * native
    with pytest.raises(Exception, match="max_model_len|max_position_embeddings|maximum"):
        EngineArgs(model=str(tiny_model), max_model_len=4 * native, enforce_eager=True).create_model_config()

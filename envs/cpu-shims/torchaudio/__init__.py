"""Stand-in for torchaudio in the local CPU environment.

PyPI's torchaudio wheels are CUDA builds that cannot load beside the CPU torch this project pins
(see docs/platform notes in README). LLaMA-Factory 0.9.5 imports torchaudio at module load for its
audio plugins, which LongMab-PO (text-only DPO) never uses. This module satisfies that import and
fails loudly if audio is ever actually requested. On GPU clusters the real torchaudio is installed
from envs/llamafactory.yaml instead.
"""

__version__ = "0.0.0+longmab.cpu.stub"


def _unavailable(*_args, **_kwargs):
    raise RuntimeError(
        "torchaudio is not available in longmab's CPU environment (text-only pipeline); "
        "install a torchaudio build matching your torch to use audio inputs"
    )


load = _unavailable
info = _unavailable


class _Functional:
    resample = staticmethod(_unavailable)


functional = _Functional()

"""The environment the workflow hands to its jobs."""

from __future__ import annotations

import os


def prefer_library(folder: str | os.PathLike) -> str:
    """Put ``folder`` (the workflow's ``workflow_scripts``) first on ``PYTHONPATH`` and return it.

    Every job's interpreter (local, or on a cluster node: sbatch exports the environment) then imports
    ``longmab`` from the workflow being run, before site-packages and before the ``.pth`` file of an
    editable install that may point to another checkout.
    """
    folder = os.fspath(folder)
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != folder]
    os.environ["PYTHONPATH"] = os.pathsep.join([folder, *rest])
    return os.environ["PYTHONPATH"]

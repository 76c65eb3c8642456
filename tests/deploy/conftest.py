"""Fixtures for the deployment tests: the repository's deploy/ tree and the tools they run.

The pipeline fixtures (a configuration factory and a caliper simulator) are shared with
tests/pipeline, so the metrics tests drive a real gateway the same way.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from collector.testing.services import EXTRA_BINARY_DIRS
from tests.pipeline.conftest import caliper, stack_config  # noqa: F401 - fixtures for this folder

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def need(binary: str, package: str) -> str:
    """The tool's path; a skip when it is missing, a failure under ``CI=true`` (as require_binary)."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    found = shutil.which(binary, path=os.pathsep.join([*dirs, *EXTRA_BINARY_DIRS]))
    if found is not None:
        return found
    message = f"{binary!r} is not installed (apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and a required tool is missing: {message}")
    pytest.skip(message)

"""Every shell script under deploy/ parses (bash -n) and passes shellcheck."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, need

SCRIPTS = sorted(DEPLOY.rglob("*.sh"))


def test_the_scripts_are_found() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"install.sh", "uninstall.sh", "setup-influxdb1.sh", "setup-influxdb2.sh", "influxdb-init.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_script_parses_and_passes_shellcheck(script: Path) -> None:
    assert script.stat().st_mode & 0o111, f"{script} is not executable"
    assert script.read_text().startswith("#!/"), script
    parsed = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr
    shellcheck = need("shellcheck", "shellcheck")
    checked = subprocess.run([shellcheck, "--external-sources", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_make_acl_is_executable_and_documents_itself() -> None:
    script = DEPLOY / "mosquitto" / "make-acl.py"
    assert script.stat().st_mode & 0o111
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--gateway-config" in out.stdout

"""deploy/install.sh into a temporary DESTDIR: what it lays out, that the units pass
``systemd-analyze verify``, and that an upgrade keeps configuration, secrets and journal.

The installation is real (a virtual environment with the project pip-installed from the
source tree), so the module installs once and the tests look at the result; the upgrade
and uninstall test, which changes it, comes last.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, REPO, need

PREFIX = "/opt/inspection-collector"
UNITS = ("inspection-gateway", "inspection-recorder", "inspection-dashboard")
ROLES_CONFIG = ("gateway", "recorder", "dashboard")


@dataclass
class Installed:
    root: Path
    log: str

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")


def run_install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env["DESTDIR"] = str(root)
    # the interpreter behind the test's virtual environment, as an operator would run python3
    python = getattr(sys, "_base_executable", None) or sys.executable
    return subprocess.run(
        ["bash", str(DEPLOY / "install.sh"), "--python", python, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("destdir")
    result = run_install(root, "--role", "all")
    assert result.returncode == 0, result.stdout + result.stderr
    return Installed(root, result.stderr)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_layout_modes_and_nothing_outside_destdir(installed: Installed) -> None:
    etc = installed.path("/etc/inspection-collector")
    assert mode(etc) == 0o750 and mode(etc / "secrets") == 0o750
    for name in (*ROLES_CONFIG, "people"):  # the gateway's user register too
        config = etc / f"{name}.yaml"
        assert mode(config) == 0o640
        assert config.read_text() == (DEPLOY / "config" / f"{name}.yaml.example").read_text()
    data = installed.path("/var/lib/inspection-collector")
    assert data.is_dir() and mode(data) == 0o755
    # one data directory per service, each its own (the units' StateDirectory=)
    assert sorted(p.name for p in data.iterdir()) == sorted(ROLES_CONFIG)
    for name in ROLES_CONFIG:
        assert mode(data / name) == 0o750 and not any((data / name).iterdir())
    for unit in UNITS:  # under DESTDIR, units go where packages put them
        path = installed.path(f"/lib/systemd/system/{unit}.service")
        assert mode(path) == 0o644
        assert path.read_text() == (DEPLOY / "systemd" / f"{unit}.service").read_text()
    assert not installed.path("/etc/systemd").exists()
    rules = installed.path("/etc/udev/rules.d/99-inspection-gauges.rules.example")
    assert rules.is_file() and not rules.with_suffix("").exists()  # .rules: inactive until renamed
    share = installed.path(f"{PREFIX}/share")
    for rel in (
        "doc/operations.md",
        "examples/gateway.yaml.example",
        "examples/devices/mitutoyo-idh.yaml",  # drivers/serial/mitutoyo_idh/sample.yaml
        "examples/devices/sartorius-sbi.yaml",
        "examples/devices/sylvac.yaml",  # drivers/serial/ascii/sample-sylvac.yaml
        "deploy/mosquitto/mosquitto.conf",
        "deploy/mosquitto/make-acl.py",
        "deploy/influxdb/setup-influxdb1.sh",
        "deploy/grafana/dashboards/quality.json",
    ):
        assert (share / rel).is_file(), rel
    assert os.access(share / "deploy/mosquitto/make-acl.py", os.X_OK)
    # DESTDIR: no user was created, nothing chowned (everything belongs to whoever ran it)
    assert {p.stat().st_uid for p in (etc, data, etc / "gateway.yaml")} == {os.getuid()}
    assert "post-install.sh" in installed.log


def test_the_virtual_environment_runs_and_names_its_final_path(installed: Installed) -> None:
    venv = installed.path(f"{PREFIX}/venv")
    script = venv / "bin" / "collector"
    assert script.read_text().splitlines()[0] == f"#!{PREFIX}/venv/bin/python"
    # nothing in the environment names the staging root or the build directory
    for path in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if path.is_file() and not path.is_symlink():
            text = path.read_bytes()
            assert str(installed.root).encode() not in text, path
            assert b"venv.new" not in text, path
    assert not installed.path(f"{PREFIX}/venv.new").exists()
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "collector.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "gateway" in out.stdout, out.stderr
    # byte code is compiled, for the final path (the services cannot write it: ProtectSystem=strict)
    pyc = next((venv / "lib").glob("python3*/site-packages/collector/__pycache__/cli.*.pyc"))
    assert f"{PREFIX}/venv/".encode() in pyc.read_bytes()


@pytest.mark.parametrize("folder", ["static/operator", "static/dashboard", "templates/dashboard"])
def test_the_installed_package_carries_its_web_assets(installed: Installed, folder: str) -> None:
    """The web UIs serve collector/static/ and render collector/templates/ from the installed package."""
    site = next(installed.path(f"{PREFIX}/venv/lib").glob("python3*/site-packages"))
    expected = sorted(p.name for p in (REPO / "collector" / folder).iterdir())
    shipped = site / "collector" / folder
    assert shipped.is_dir(), (
        f"pip install . leaves out collector/{folder}/: pyproject.toml needs it in [tool.setuptools.package-data]"
    )
    assert sorted(p.name for p in shipped.iterdir()) == expected


def test_post_install_script_does_what_destdir_left_out(installed: Installed) -> None:
    script = installed.path(f"{PREFIX}/share/post-install.sh")
    assert os.access(script, os.X_OK)
    text = script.read_text()
    for expected in (
        "groupadd --system collector",
        "useradd --system --gid collector-gateway --groups collector",
        "useradd --system --gid collector-recorder --groups collector",
        "useradd --system --gid collector-dashboard --groups collector",
        "usermod --append --groups dialout collector-gateway",
        "chown root:collector /etc/inspection-collector /etc/inspection-collector/secrets",
        "chown root:collector-gateway /etc/inspection-collector/gateway.yaml",
        "chown root:collector-gateway /etc/inspection-collector/people.yaml",
        "chown root:collector-recorder /etc/inspection-collector/recorder.yaml",
        "chown collector-gateway:collector-gateway /var/lib/inspection-collector/gateway",
        "chown collector-recorder:collector-recorder /var/lib/inspection-collector/recorder",
        "systemctl daemon-reload",
        "systemctl try-restart inspection-gateway.service inspection-recorder.service inspection-dashboard.service",
    ):
        assert expected in text, expected
    assert "useradd --system --gid collector " not in text  # no shared service user any more
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    shellcheck = need("shellcheck", "shellcheck")
    out = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def _systemd_root(installed: Installed) -> Path:
    # systemd-analyze --root needs the standard targets the units refer to (sysinit.target,
    # network-online.target ...): the host's own unit files, beside the installed ones.
    host_units = Path("/usr/lib/systemd/system")
    if not host_units.is_dir():
        pytest.fail("no /usr/lib/systemd/system on this host: install Debian's systemd package")
    target = installed.path("/usr/lib/systemd/system")
    if not target.exists():
        shutil.copytree(host_units, target, symlinks=True)
    return installed.root


def test_systemd_analyze_verify_accepts_every_unit(installed: Installed) -> None:
    """Against the installed tree: ExecStart= must exist there and be executable."""
    analyze = need("systemd-analyze", "systemd")
    root = _systemd_root(installed)
    units = [str(installed.path(f"/lib/systemd/system/{u}.service")) for u in UNITS]
    out = subprocess.run([analyze, "verify", f"--root={root}", *units], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys or bad values too, with a warning: demand silence
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stdout + out.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=yes", f"--root={root}", "--no-pager", *units],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # exposure is printed as e.g. "Overall exposure level for inspection-gateway.service: 2.2 OK"
    levels = [line for line in security.stdout.splitlines() if "Overall exposure level" in line]
    assert len(levels) == len(UNITS), security.stdout + security.stderr
    for line in levels:
        assert float(line.rsplit(":", 1)[1].split()[0]) <= 3.0, line


def test_each_service_runs_as_its_own_user(installed: Installed) -> None:
    users = {}
    for unit in UNITS:
        text = installed.path(f"/lib/systemd/system/{unit}.service").read_text()
        fields = dict(
            line.split("=", 1)
            for line in text.splitlines()
            if line.split("=", 1)[0] in ("User", "Group", "StateDirectory")
        )
        role = unit.removeprefix("inspection-")
        assert fields == {
            "User": f"collector-{role}",
            "Group": f"collector-{role}",
            "StateDirectory": f"inspection-collector/{role}",
        }, unit
        assert f"ReadWritePaths=/var/lib/inspection-collector/{role}\n" in text
        users[unit] = fields["User"]
    assert len(set(users.values())) == len(UNITS)


def test_post_install_sets_each_secret_to_its_service_and_warns_of_placeholders(
    installed: Installed, tmp_path: Path
) -> None:
    """The secrets loop of post-install.sh, run on a copy (chown to root: the test may not be root)."""
    script = installed.path(f"{PREFIX}/share/post-install.sh").read_text()
    start = script.index("for f in /etc/inspection-collector/secrets/*; do")
    loop = script[start : script.index("\ndone\n", start) + 6]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, value in (
        ("gateway-mqtt-password", "s3cret-1"),
        ("recorder-mqtt-password", "CHANGEME\n"),
        ("influxdb-reader-token", ""),
        ("notes.txt", "x"),
    ):
        (secrets / name).write_text(value)
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("chown", "getent"):  # record, do not change ownership; every group "exists"
        (fake / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {tmp_path}/calls\n')
        (fake / tool).chmod(0o755)
    run = subprocess.run(
        ["bash", "-c", loop.replace("/etc/inspection-collector/secrets", str(secrets))],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"},
    )
    assert run.returncode == 0, run.stderr
    calls = (tmp_path / "calls").read_text()
    assert f"chown root:collector-gateway {secrets}/gateway-mqtt-password" in calls
    assert f"chown root:collector-recorder {secrets}/recorder-mqtt-password" in calls
    assert f"chown root:collector-dashboard {secrets}/influxdb-reader-token" in calls
    assert f"chown root:root {secrets}/notes.txt" in calls
    assert f"{secrets}/recorder-mqtt-password holds a placeholder" in run.stderr
    assert f"{secrets}/influxdb-reader-token holds a placeholder or nothing" in run.stderr
    assert "gateway-mqtt-password holds" not in run.stderr
    assert all(mode(p) == 0o640 for p in secrets.iterdir())


def test_systemd_analyze_verify_notices_a_broken_unit(installed: Installed, tmp_path: Path) -> None:
    """The check above would catch a mistake: a missing binary, an unknown directive."""
    analyze = need("systemd-analyze", "systemd")
    root = _systemd_root(installed)
    unit = installed.path("/lib/systemd/system/inspection-gateway.service").read_text()
    broken = installed.path("/lib/systemd/system/broken-check.service")
    broken.write_text(
        unit.replace("venv/bin/collector", "venv/bin/no-such-binary").replace("RestartSec=5s", "RestartSteps=5")
    )
    try:
        out = subprocess.run([analyze, "verify", f"--root={root}", str(broken)], capture_output=True, text=True)
    finally:
        broken.unlink()
    assert "no-such-binary" in out.stderr and "RestartSteps" in out.stderr


def test_role_and_prefix_are_checked(tmp_path: Path) -> None:
    bad = run_install(tmp_path / "r", "--role", "database")
    assert bad.returncode == 2 and "--role must be gateway, central or all" in bad.stderr
    bad = run_install(tmp_path / "r", "--prefix", "relative/path")
    assert bad.returncode == 2 and "absolute" in bad.stderr
    assert not (tmp_path / "r").exists()
    help_text = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "DESTDIR" in help_text.stdout


def test_upgrade_keeps_config_secrets_and_journal_then_uninstall(installed: Installed) -> None:
    """Runs last: upgrades the module's installation in place, then removes it."""
    etc = installed.path("/etc/inspection-collector")
    edited = "# the operator's own settings\n" + (etc / "gateway.yaml").read_text()
    (etc / "gateway.yaml").write_text(edited)
    (etc / "secrets" / "gateway-mqtt-password").write_text("s3cret")
    (etc / "people.yaml").write_text("users: []  # the plant's own\n")
    journal = installed.path("/var/lib/inspection-collector/gateway/journal.sqlite")
    journal.write_bytes(b"not really a journal, but it must stay exactly as it is")
    marker = installed.path(f"{PREFIX}/venv/old-version-marker")
    marker.write_text("x")

    result = run_install(installed.root, "--role", "all")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kept /etc/inspection-collector/gateway.yaml" in result.stderr
    assert (etc / "gateway.yaml").read_text() == edited
    assert (etc / "secrets" / "gateway-mqtt-password").read_text() == "s3cret"
    assert (etc / "people.yaml").read_text() == "users: []  # the plant's own\n"
    assert journal.read_bytes() == b"not really a journal, but it must stay exactly as it is"
    assert not marker.exists()  # the environment was rebuilt and swapped in whole
    assert not installed.path(f"{PREFIX}/venv.old").exists()
    assert not installed.path(f"{PREFIX}/venv.new").exists()
    venv_python = installed.path(f"{PREFIX}/venv/bin/python")
    assert subprocess.run([str(venv_python), "-c", "import collector.gateway.daemon"], timeout=60).returncode == 0

    env = dict(os.environ, DESTDIR=str(installed.root))
    out = subprocess.run(["bash", str(DEPLOY / "uninstall.sh")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert not installed.path(PREFIX).exists()
    assert not any(installed.path(f"/lib/systemd/system/{u}.service").exists() for u in UNITS)
    assert (etc / "gateway.yaml").read_text() == edited  # configuration kept without --purge
    assert journal.exists()  # the journal is never removed
    out = subprocess.run(["bash", str(DEPLOY / "uninstall.sh"), "--purge"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and not etc.exists() and journal.exists()

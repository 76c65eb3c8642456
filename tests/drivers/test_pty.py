"""The simulators' own plumbing: the pty that stands in for a USB serial adapter, and the
``simulators`` command as a process (what a bench set-up runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import serial

from simulators.pty import PortUnplugged, PtyPort

REPO = Path(__file__).resolve().parents[2]


# -- the pty under the simulator ----------------------------------------------------------------


def test_pty_unplug_is_an_error_on_the_driver_side(link_path: Path) -> None:
    with PtyPort(link_path) as pty:
        first = pty.slave_name
        assert os.path.realpath(link_path) == first
        port = serial.Serial(str(link_path), timeout=0.5)
        try:
            pty.write(b"01A+0000.123\r")
            assert port.read(13) == b"01A+0000.123\r"
            port.write(b"1\r")
            assert pty.read_available(1.0) == b"1\r"

            pty.unplug()
            assert not link_path.exists() and not pty.plugged
            with pytest.raises(serial.SerialException):
                port.read(1)
            with pytest.raises(serial.SerialException):
                port.write(b"1\r")
            with pytest.raises(serial.SerialException):
                serial.Serial(str(link_path))
            with pytest.raises(PortUnplugged):
                pty.write(b"x")
            assert pty.read_available(0.01) == b""
        finally:
            port.close()

        pty.replug()
        assert link_path.is_symlink() and os.path.realpath(link_path) == pty.slave_name
        with serial.Serial(str(link_path), timeout=0.5) as again:
            pty.write(b"01A-0000.001\r")
            assert again.read(13) == b"01A-0000.001\r"
    assert not link_path.exists()


def test_pty_is_raw(link_path: Path) -> None:
    """Cooked mode would echo frames back to the simulator and turn CR into LF."""
    with PtyPort(link_path) as pty:
        fd = os.open(link_path, os.O_RDWR | os.O_NOCTTY)  # plain open: pyserial would set raw itself
        try:
            pty.write(b"01A+0000.123\r")
            assert os.read(fd, 100) == b"01A+0000.123\r"
            assert pty.read_available(0.05) == b""  # no echo
        finally:
            os.close(fd)


def test_pty_unplug_wakes_a_blocked_reader(link_path: Path) -> None:
    with PtyPort(link_path) as pty:
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(pty.read_available(5.0)))
        reader.start()  # whether it is already in select() or not, unplug must end it
        t0 = time.monotonic()
        pty.unplug()
        reader.join(2.0)
        assert not reader.is_alive() and result == [b""]
        assert time.monotonic() - t0 < 1.0


def test_pty_refuses_to_replace_a_real_file(tmp_path: Path) -> None:
    target = tmp_path / "not-a-link"
    target.write_text("keep me")
    with pytest.raises(FileExistsError):
        PtyPort(target)
    assert target.read_text() == "keep me"


# -- command line -------------------------------------------------------------------------------


def test_cli_runs_until_interrupted(link_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "simulators.cli", "mitutoyo", "--link", str(link_path)]
    cmd += ["--interval", "0.01", "--seed", "1", "--nominal", "5.5", "--bad-rate", "0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "mitutoyo simulator on" in banner, proc.stderr.read() if proc.stderr else ""
        with serial.Serial(str(link_path), timeout=2.0) as port:
            port.read_until(b"\r")  # may start mid-frame: the input queue was flushed on open
            frame = port.read_until(b"\r")
        assert len(frame) == 13 and frame.startswith(b"01A+0005.")
        assert "value" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5.0) == 0
        assert not link_path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

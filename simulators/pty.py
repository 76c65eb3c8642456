"""A pseudo-terminal that stands in for a USB serial adapter.

:class:`PtyPort` opens a pty pair and publishes the slave under a stable symlink (say
``/tmp/bench/caliper-1``), so a driver opens that path with pyserial exactly as it would
open ``/dev/serial/by-id/...``. The simulator talks through the master side.

Pty quirks worth knowing (Linux):

* The slave starts in cooked mode: echo would bounce every byte the simulator writes back
  to it, and ICRNL would turn the frame's CR into LF. Hence raw mode, set before the
  symlink appears. (pyserial sets raw mode again when it opens the port.)
* Reading the master fails with EIO while no slave fd is open. This object keeps its own
  slave fd open while plugged, so the simulator keeps working while the driver is away.
* pyserial flushes the input queue when it opens the port: bytes written before the
  driver connected are lost, as with a real adapter that had no host. Wait for the
  driver's CONNECTED event before sending.
* :meth:`unplug` closes master and slave. The driver's already-open slave fd then reads
  end-of-file, which pyserial reports as ``SerialException("device reports readiness to
  read but returned no data ...")``, writes fail with EIO, and bytes still queued for the
  driver are discarded by the hangup: a frame sent just before unplugging is lost. The
  symlink is removed, so reopening fails with ENOENT until :meth:`replug`.
* After a replug the kernel may hand out the same ``/dev/pts/N`` number again once the
  driver has closed its old fd; nothing should remember the resolved path, only the link.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from pathlib import Path
from types import TracebackType


class PortUnplugged(OSError):
    """The simulated cable is out: nothing can be written or read."""


class PtyPort:
    """The device end of a simulated serial cable, published at ``link``."""

    def __init__(self, link: str | os.PathLike[str]) -> None:
        self.link = Path(link)
        if self.link.exists() and not self.link.is_symlink():
            raise FileExistsError(f"{self.link} exists and is not a symlink")
        self.link.parent.mkdir(parents=True, exist_ok=True)
        # Serialises fd use against unplug(): a closed fd number can be reused at once by any
        # other open() in the process, so reading or writing a stale number is never safe.
        self._lock = threading.Lock()
        # Lets unplug() wake a read_available() blocked in select() so it drops the lock.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name = ""
        self._closed = False
        self._open()

    # -- state ------------------------------------------------------------------------------

    @property
    def plugged(self) -> bool:
        return self._master is not None

    @property
    def slave_name(self) -> str:
        """The ``/dev/pts/N`` currently behind the link (empty while unplugged)."""
        return self._slave_name if self.plugged else ""

    # -- data -------------------------------------------------------------------------------

    def write(self, data: bytes, timeout: float = 2.0) -> None:
        """Send bytes to the driver. Raises :class:`PortUnplugged`, or TimeoutError if nobody drains."""
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        with self._lock:
            master = self._require_master()
            while view:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.link}: peer is not reading")
                _, ready, _ = select.select([], [master], [], left)
                if ready:
                    view = view[os.write(master, view) :]

    def read_available(self, timeout: float = 0.0) -> bytes:
        """Return what the driver has written, waiting up to ``timeout`` for the first byte.

        Returns ``b""`` on timeout and while unplugged.
        """
        with self._lock:
            if self._master is None:
                return b""
            master = self._master
            ready, _, _ = select.select([master, self._wake_r], [], [], timeout)
            if self._wake_r in ready:
                self._drain_wake()
            if master not in ready or self._master is None:
                return b""
            chunks: list[bytes] = []
            while True:
                try:
                    chunk = os.read(master, 4096)
                except BlockingIOError:
                    break
                except OSError:
                    break  # EIO: no slave fd open at all; the caller sees nothing to read
                if not chunk:
                    break
                chunks.append(chunk)
                if not select.select([master], [], [], 0)[0]:
                    break
            return b"".join(chunks)

    # -- cable ------------------------------------------------------------------------------

    def unplug(self) -> None:
        """Pull the cable: close both ends and remove the link. Idempotent."""
        os.write(self._wake_w, b"x")
        with self._lock:
            self._drain_wake()
            for fd in (self._master, self._slave):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._master = self._slave = None
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    def replug(self) -> None:
        """Plug a fresh pty in and re-point the link at it atomically."""
        if self._closed:
            raise ValueError("port is closed")
        self.unplug()
        self._open()

    def close(self) -> None:
        if self._closed:
            return
        self.unplug()
        self._closed = True
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PtyPort:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _open(self) -> None:
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            name = os.ttyname(slave)
            # symlink beside the target name, then rename: the path never dangles mid-way
            tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.symlink(name, tmp)
            os.replace(tmp, self.link)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        with self._lock:
            self._master, self._slave, self._slave_name = master, slave, name

    def _require_master(self) -> int:
        if self._master is None:
            raise PortUnplugged(f"{self.link}: unplugged")
        return self._master

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 1024)

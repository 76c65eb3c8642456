"""Real service processes (Mosquitto, InfluxDB 1.x) on loopback, for tests and the demo.

Tests run against the real broker and database, never mocks, and the
demo runs the same processes, so both use these launchers. Each service:

- gets its own working directory (configuration, data, log), so parallel instances never
  share state;
- listens only on 127.0.0.1, on a free port unless one is given;
- runs in its own session (process group), so :meth:`stop` and :meth:`kill` reach every
  process it may have started and nothing is left behind;
- can be stopped and started again on the same port with the same data, which the broker
  outage tests rely on.

The generated configurations are for tests and demos only (anonymous access, no TLS);
``deploy/`` holds the production templates.

Why one module of this size: two launchers on one base class (:class:`_Service`: working
directory, free port, process group, restart on the same port, readiness), read together.
"""

from __future__ import annotations

import contextlib
import getpass
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Self

from collector.errors import CollectorError

#: where Debian, Raspberry Pi OS and /usr/local installs put daemons that may not be on a
#: user's PATH (sbin is often missing from non-root PATHs)
EXTRA_BINARY_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/bin")

#: the Debian package that provides each binary, for the error message
DEBIAN_PACKAGES = {"mosquitto": "mosquitto", "mosquitto_passwd": "mosquitto", "influxd": "influxdb"}

LOOPBACK = "127.0.0.1"


class ServiceUnavailable(CollectorError):
    """A service binary is not installed (tests skip on this unless ``CI=true``)."""


class ServiceError(CollectorError):
    """A service was found but failed to start, or died (the message carries its log tail)."""


class PortInUse(ServiceError):
    """The port a service was to listen on is taken by another process."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    There is a window between this call and the service binding the port; the launchers
    retry with another port when a port they picked themselves turns out to be taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def find_binary(name: str) -> str:
    """The absolute path of ``name``, searched on PATH and in :data:`EXTRA_BINARY_DIRS`."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    dirs += [d for d in EXTRA_BINARY_DIRS if d not in dirs]
    found = shutil.which(name, path=os.pathsep.join(dirs))
    if found is None:
        package = DEBIAN_PACKAGES.get(name, name)
        raise ServiceUnavailable(
            f"{name!r} was not found on PATH or in {', '.join(EXTRA_BINARY_DIRS)}: "
            f"install Debian's {package!r} package (apt-get install {package})"
        )
    return found


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


def _check_path(path: Path) -> None:
    # Mosquitto's configuration parser splits values at whitespace, so a path with a space
    # would silently become a different path; refuse it instead.
    if any(c.isspace() for c in str(path)):
        raise ValueError(f"service working directory must not contain whitespace: {str(path)!r}")


def _port_accepts(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The child is a session leader (start_new_session), so its pid is its group id; the
    # group outlives the leader if it forked, which is why we signal the group, not the pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _kill_at_exit(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        _signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


class _Service:
    """Common process handling: start, readiness wait, stop, kill, restart on the same port."""

    binary_name = ""
    #: how many fresh ports to try when a port we picked ourselves was taken meanwhile
    port_attempts = 3

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        _check_path(self.workdir)
        self._port = port
        self._port_is_ours = port is None
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], _Service] | None = None
        self._started_once = False

    # -- to be provided by subclasses ------------------------------------------------

    def _pick_ports(self, fresh: bool) -> None:
        """Choose the ports still unset, or all of ours again when ``fresh``."""
        raise NotImplementedError

    def _write_config(self) -> None:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    @property
    def output_path(self) -> Path:
        """Where the process's stdout and stderr go."""
        return self.workdir / f"{self.binary_name}.out"

    def _log_tail(self) -> str:
        return f"--- {self.output_path.name} ---\n{_tail(self.output_path)}"

    def _environment(self) -> dict[str, str]:
        return dict(os.environ)

    # -- public ----------------------------------------------------------------------

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        if self._port is None:
            raise ServiceError(f"{self.binary_name} has no port until it is started")
        return self._port

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> Self:
        """Start the process and return once it serves requests. A no-op if it runs."""
        if self.running:
            return self
        binary = find_binary(self.binary_name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Only a port we chose and never served on may be swapped for another: a caller's
        # port, or the port of an earlier run (clients reconnect to it), must stay.
        attempts = self.port_attempts if self._port_is_ours and not self._started_once else 1
        for attempt in range(1, attempts + 1):
            self._pick_ports(fresh=attempt > 1)
            try:
                self._launch(binary, timeout)
            except PortInUse:
                if attempt == attempts:
                    raise
                continue
            self._started_once = True
            return self
        raise AssertionError("unreachable")

    def _ports(self) -> list[int]:
        return [self.port]

    def _launch(self, binary: str, timeout: float) -> None:
        # Readiness is judged by connecting to the port; if something else already listens
        # there, that check would pass for a service that is about to die on "address in use".
        for port in self._ports():
            if _port_accepts(port):
                raise PortInUse(f"{self.binary_name}: port {port} on {LOOPBACK} is already in use")
        self._write_config()
        with open(self.output_path, "ab") as out:
            out.write(f"--- start {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
            out.flush()
            proc = subprocess.Popen(
                [binary, *self._command()],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self._environment(),
                start_new_session=True,
            )
        self._proc = proc
        # A test that crashes (or a demo interrupted hard) must not leave a daemon behind.
        self._finalizer = weakref.finalize(self, _kill_at_exit, proc)
        deadline = time.monotonic() + timeout
        while True:
            code = proc.poll()
            if code is not None:
                self._reap()
                tail = self._log_tail()
                # Another process may have bound the port between our check and the bind.
                error = PortInUse if "already in use" in tail.lower() else ServiceError
                raise error(f"{self.binary_name} exited with status {code} while starting on port {self._port}\n{tail}")
            if self._ready() and proc.poll() is None:
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ServiceError(
                    f"{self.binary_name} did not become ready on port {self._port} within "
                    f"{timeout:g} s\n{self._log_tail()}"
                )
            time.sleep(0.02)

    def _reap(self) -> None:
        proc = self._proc
        if proc is None:
            return
        # Whatever the leader left in its group goes with it.
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._proc = None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the services save their state on it), then SIGKILL after ``timeout``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
        self._reap()

    def kill(self) -> None:
        """SIGKILL, as a crash or power loss would end it (nothing is saved)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
        self._reap()

    def restart(self, timeout: float = 10.0) -> Self:
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Mosquitto(_Service):
    """A Mosquitto 2.x broker on 127.0.0.1 with persistence in ``workdir``.

    ``extra_conf`` is appended to the generated configuration (e.g. a second listener or
    tighter limits for a test that wants to provoke them).
    """

    binary_name = "mosquitto"

    #: Mosquitto drops QoS 1 messages for an offline persistent subscriber beyond
    #: 1,000 by default, silently. A recorder may be down for a shift while gateways keep
    #: publishing, so the bound must exceed any realistic backlog: 1,000,000 messages,
    #: each carrying one or more records.
    MAX_QUEUED_MESSAGES = 1_000_000
    #: Queued messages live in the broker's memory: bound them by bytes as well, so a
    #: backlog cannot exhaust RAM. 1 GiB holds the 1,000,000 single-record messages of
    #: about 1 KiB that the queue-length bound allows.
    MAX_QUEUED_BYTES = 1024**3
    #: The recorder acknowledges a message only after InfluxDB accepted the batch it is
    #: in, so the broker's in-flight window is the largest batch a recorder can form. The
    #: default of 20 would cap every InfluxDB write at 20 messages.
    MAX_INFLIGHT_MESSAGES = 1000
    #: Persistence is a periodic snapshot of the in-memory database (plus one on SIGTERM).
    #: Short, because tests kill brokers; in production the gateways' journals cover what
    #: a broker crash loses between snapshots only until they are acknowledged, see
    #: deploy/mosquitto/mosquitto.conf.
    AUTOSAVE_INTERVAL_S = 5

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "") -> None:
        super().__init__(workdir, port)
        self.extra_conf = extra_conf
        self._log_offset = 0

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def persistence_dir(self) -> Path:
        return self.workdir / "persistence"

    def _pick_ports(self, fresh: bool) -> None:
        if self._port is None or fresh:
            self._port = free_port()

    def _log_tail(self) -> str:
        return f"{super()._log_tail()}\n--- {self.log_path.name} ---\n{_tail(self.log_path)}"

    def config_text(self) -> str:
        """The configuration file, with the reason for every limit beside it."""
        return f"""\
# Generated by collector.testing.services.Mosquitto for tests and demos: loopback only.
# The production template is deploy/mosquitto/mosquitto.conf.

listener {self.port} {LOOPBACK}
# Anonymous access is acceptable only because the listener is bound to loopback.
allow_anonymous true

# Started as root (CI, containers), Mosquitto would drop privileges to the "mosquitto"
# user, which cannot write this directory; keep the invoking user.
user {getpass.getuser()}

# Persistent sessions and their queued QoS 1 messages must survive a broker restart
# (broker outage tests stop and start it on the same port and directory).
persistence true
persistence_location {self.persistence_dir}/
# Seconds between snapshots of the in-memory database (it is also saved on SIGTERM).
# Short, because tests also kill -9 the broker.
autosave_interval {self.AUTOSAVE_INTERVAL_S}

# The default of 1000 silently drops QoS 1 messages for an offline persistent
# subscriber (a recorder that is down); the bound must exceed any realistic backlog.
max_queued_messages {self.MAX_QUEUED_MESSAGES}
# Queued messages are held in memory: bound them by bytes too (1 GiB = the message
# bound at about 1 KiB per single-record message).
max_queued_bytes {self.MAX_QUEUED_BYTES}
# The recorder acknowledges only after InfluxDB accepted the batch, so this window is
# its largest possible batch; the default of 20 would cap every write at 20 messages.
max_inflight_messages {self.MAX_INFLIGHT_MESSAGES}
# A persistent client (a recorder's session) that has not come back after this long is
# forgotten with its queue: long enough for a weekend outage of a test or demo recorder.
persistent_client_expiration 14d

log_dest file {self.log_path}
log_type error
log_type warning
log_type notice
log_type information
log_timestamp true
log_timestamp_format %Y-%m-%dT%H:%M:%S

# Records and alerts are small messages where latency matters more than packet count.
set_tcp_nodelay true
{self.extra_conf}
"""

    def _write_config(self) -> None:
        self.persistence_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text(), encoding="utf-8")
        try:
            self._log_offset = self.log_path.stat().st_size
        except FileNotFoundError:
            self._log_offset = 0

    def _command(self) -> list[str]:
        return ["-c", str(self.config_path)]

    def _ready(self) -> bool:
        # Mosquitto logs "running" once its persistence file is loaded and its listeners
        # are open; only this run's part of the (appended) log counts.
        if not _port_accepts(self.port):
            return False
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return b" running" in log.read()
        except FileNotFoundError:
            return False


class InfluxD(_Service):
    """An InfluxDB 1.x server (``influxd run``) on 127.0.0.1 with its data in ``workdir``.

    Besides the HTTP port, influxd binds a second port for its RPC/backup service (8088
    by default, which would collide between parallel instances); it gets its own free
    loopback port.
    """

    binary_name = "influxd"

    def __init__(self, workdir: Path, port: int | None = None, *, auth_enabled: bool = False) -> None:
        super().__init__(workdir, port)
        self._rpc_port: int | None = None
        #: with auth, the first user must be created as an admin (InfluxDB allows that one
        #: statement without credentials) before anything else is accepted
        self.auth_enabled = auth_enabled

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def rpc_port(self) -> int:
        if self._rpc_port is None:
            raise ServiceError("influxd has no RPC port until it is started")
        return self._rpc_port

    @property
    def config_path(self) -> Path:
        return self.workdir / "influxdb.conf"

    def _pick_ports(self, fresh: bool) -> None:
        if self._port is None or (fresh and self._port_is_ours):
            self._port = free_port()
        if self._rpc_port is None or fresh:
            rpc = free_port()
            while rpc == self._port:
                rpc = free_port()
            self._rpc_port = rpc

    def _ports(self) -> list[int]:
        return [self.port, self.rpc_port]

    def _environment(self) -> dict[str, str]:
        # influxd lets INFLUXDB_* variables override its configuration file; an operator's
        # environment must not move a test instance onto another port or data directory.
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def config_text(self) -> str:
        def q(value: object) -> str:
            return json.dumps(str(value))  # a JSON string is a valid TOML basic string

        return f"""\
# Generated by collector.testing.services.InfluxD for tests and demos: loopback only.
reporting-enabled = false
# The RPC (backup/restore) service; its default 127.0.0.1:8088 would collide between
# parallel instances.
bind-address = {q(f"{LOOPBACK}:{self.rpc_port}")}

[meta]
  dir = {q(self.workdir / "meta")}
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = {q(self.workdir / "data")}
  wal-dir = {q(self.workdir / "wal")}
  # Tests write bounded-cardinality series: the in-memory index is enough and starts fast.
  index-version = "inmem"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  write-timeout = "10s"

[retention]
  enabled = true

[shard-precreation]
  enabled = true

[monitor]
  # No _internal database: it would add writes and series nobody reads in a test.
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = {q(f"{LOOPBACK}:{self.port}")}
  # Anonymous access (the default here) is acceptable only because of the loopback bind.
  auth-enabled = {"true" if self.auth_enabled else "false"}
  log-enabled = false
  suppress-write-log = true
  pprof-enabled = false
  https-enabled = false

[logging]
  level = "warn"
  suppress-logo = true

[ifql]
  enabled = false

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false

[continuous_queries]
  enabled = false
"""

    def _write_config(self) -> None:
        self.config_path.write_text(self.config_text(), encoding="utf-8")

    def _command(self) -> list[str]:
        return ["run", "-config", str(self.config_path)]

    def _ready(self) -> bool:
        return ping(self.url.removeprefix("http://"))


def ping(hostport: str, timeout: float = 0.5) -> bool:
    """Whether an InfluxDB at ``host:port`` answers ``GET /ping`` with 204."""
    conn = http.client.HTTPConnection(hostport, timeout=timeout)
    try:
        conn.request("GET", "/ping")
        resp = conn.getresponse()
        resp.read()
        return resp.status == 204
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()

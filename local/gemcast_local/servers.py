"""Stand-in servers on 127.0.0.1: moto (AWS), the Firestore emulator and a GCS emulator.

Each server is a real process in its own process group (its own session), started on a free
port, awaited until it answers HTTP, and stopped together with every process of its group:
``gcloud emulators firestore start`` forks a shell that forks Java, and stopping gcloud alone
leaves Java running. Because the group is a separate session, a terminal's Ctrl-C does not reach
the servers; the Python side must stop them, which the context managers, :class:`ServerGroup`
and an ``atexit`` safety net do. On Linux the direct child also gets ``PR_SET_PDEATHSIG`` so a
parent killed with SIGKILL does not leave moto or the GCS emulator behind.

    with ServerGroup() as group:
        moto, gcs = group.start(MotoServer(), GcsEmulator())
        os.environ.update(moto.env() | gcs.env())
        ...

Clients reach a server through the environment of :meth:`StandInServer.env`; no gemcast code
knows it is talking to a stand-in. moto runs as ``python -m moto.server`` would, after one
speed-up that changes no answer (:func:`linear_item_size_check`: its size check of a new item
was quadratic in the item's attributes, half of its time for each stone loaded). The Firestore
emulator's JVM runs with :data:`EMULATOR_JAVA_OPTIONS` unless ``JAVA_TOOL_OPTIONS`` says otherwise.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

from gemcast.errors import GemcastError

HOST = "127.0.0.1"
DEFAULT_PROJECT = "gemcast-local"
DEFAULT_REGION = "us-east-1"

# Sets PR_SET_PDEATHSIG, then becomes the real server with exec (same pid, same group), so a
# parent that dies without cleaning up (SIGKILL, crash) takes the server with it. The signal
# fires when the *thread* that started the child ends: start servers from a long-lived thread.
_TRAMPOLINE = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


class ServerStartError(GemcastError):
    """A stand-in server did not answer in time, or exited while starting."""


def free_port(host: str = HOST) -> int:
    """A port the kernel just handed out on ``host``; free unless someone races us to it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in process group ``pgid``."""
    proc = Path("/proc")
    if proc.is_dir():
        members = []
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # the process ended while we looked
            # "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses.
            rest = stat[stat.rindex(")") + 2 :].split()
            if rest[0] != "Z" and int(rest[2]) == pgid:
                members.append(int(entry.name))
        return members
    # macOS and other systems without /proc.
    out = subprocess.run(
        ["ps", "-A", "-o", "pid=,pgid=,stat="], capture_output=True, text=True, check=True
    ).stdout
    return [
        int(pid)
        for pid, group, state in (line.split()[:3] for line in out.splitlines() if line.strip())
        if int(group) == pgid and not state.startswith("Z")
    ]


def gcloud_unavailable_reason() -> str | None:
    """Why the Firestore emulator cannot run here, or None when gcloud and java are present."""
    missing = [tool for tool in ("gcloud", "java") if shutil.which(tool) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not on PATH: the Firestore emulator needs google-cloud-cli and Java 11+"
        )
    return None


def gcloud_available() -> bool:
    """True when ``gcloud emulators firestore start`` can run (gcloud and java on PATH)."""
    return gcloud_unavailable_reason() is None


_LIVE: set[StandInServer] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:
    # Safety net for servers started without a context manager; normal code stops them itself.
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        server.stop()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` so context managers and ``atexit`` stop the servers.

    Python's default SIGTERM action ends the process without unwinding anything. Only the
    main thread can install handlers; elsewhere this is a no-op. A handler someone else
    installed is kept.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)


def stop_on_interrupt() -> None:
    """For a long-running local stack: SIGTERM unwinds (``exit_on_sigterm``) and Ctrl-C raises
    KeyboardInterrupt even when the stack was started from a shell that ignores SIGINT in
    background jobs (Python then never installs its own handler)."""
    exit_on_sigterm()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


class StandInServer:
    """One server process on ``127.0.0.1``; subclasses give its command and readiness probe.

    ``start()`` (or ``with``) launches it and waits until ``probe_path`` answers any HTTP
    status; ``stop()`` ends its whole process group. ``start_seconds`` is how long the start
    took, ``last_output()`` the tail of its combined stdout and stderr.
    """

    name = "server"
    probe_path = "/"
    default_timeout_s = 30.0

    def __init__(
        self,
        *,
        port: int | None = None,
        startup_timeout_s: float | None = None,
        log_path: str | os.PathLike[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self._fixed_port = port
        self.port: int = port or 0
        self.host = HOST
        self.startup_timeout_s = startup_timeout_s or self.default_timeout_s
        self._log_path = Path(log_path) if log_path else None
        self._own_log = log_path is None
        self._extra_env = dict(extra_env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Path | None = None
        self._launched_at = 0.0
        self.start_seconds: float | None = None

    # -- what subclasses define ---------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """Environment variables that point real clients at this server."""
        raise NotImplementedError

    # -- public API ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Pid of the process group leader (also the group id), or None when not running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None

    @property
    def alive(self) -> bool:
        """Started and its process has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Launch and wait until the server answers; raise ServerStartError otherwise."""
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> None:
        """Start the process without waiting (see :meth:`wait_ready`); lets a group start in parallel."""
        if self._proc is not None:
            raise ServerStartError(f"{self.name} is already running at {self.url}")
        if self._fixed_port is None:
            self.port = free_port(self.host)
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self._log_path
        elif self._log_file is None:
            fd, name = tempfile.mkstemp(prefix=f"gemcast-{self.name}-", suffix=".log")
            os.close(fd)
            self._log_file = Path(name)
        env = {**os.environ, **self._extra_env}
        argv = self.command()
        if sys.platform.startswith("linux"):
            argv = [sys.executable, "-S", "-c", _TRAMPOLINE, str(os.getpid()), *argv]
        with open(self._log_file, "ab") as log:
            # start_new_session: own group (pgid == pid) so stop() can signal every descendant,
            # and the terminal's Ctrl-C reaches only Python, which then stops us in order.
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._launched_at = time.monotonic()
        with _LIVE_LOCK:
            _LIVE.add(self)

    def wait_ready(self) -> None:
        """Block until the server answers HTTP, it exits, or the start timeout passes."""
        attempts = 1 if self._fixed_port is not None else 3
        for attempt in range(1, attempts + 1):
            proc = self._proc
            if proc is None:
                raise ServerStartError(f"{self.name} was not launched")
            deadline = self._launched_at + self.startup_timeout_s
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                if self._answers():
                    self.start_seconds = time.monotonic() - self._launched_at
                    return
                time.sleep(0.05)
            exited = proc.poll()
            tail = self.last_output()
            self.stop(keep_log=True)
            if exited is not None and attempt < attempts and "in use" in tail.lower():
                # Another process took our free port between bind and listen: try a new one.
                self.launch()
                continue
            why = (
                f"exited with code {exited}"
                if exited is not None
                else f"did not answer within {self.startup_timeout_s:.0f} s"
            )
            raise ServerStartError(
                f"{self.name} ({' '.join(self.command())}) {why} at {self.url}{self.probe_path}; "
                f"log {self._log_file}; last output:\n{tail}"
            )

    def stop(self, timeout_s: float = 10.0, *, keep_log: bool = False) -> None:
        """End the whole process group: SIGTERM, then SIGKILL for whatever is left."""
        proc = self._proc
        if proc is None:
            return
        pgid = proc.pid
        _signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            proc.wait()
        # The leader's exit does not end its children (gcloud's Java): wait, then kill them.
        deadline = time.monotonic() + timeout_s
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if group_members(pgid):
            _signal_group(pgid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 5
            while group_members(pgid) and time.monotonic() < kill_deadline:
                time.sleep(0.05)
        self._proc = None
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if self._own_log and not keep_log and self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.unlink()
            self._log_file = None

    def last_output(self, max_chars: int = 4000) -> str:
        """The tail of the server's stdout and stderr (for error messages)."""
        if self._log_file is None:
            return ""
        try:
            with open(self._log_file, "rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - max_chars))
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.url} {state}>"

    # -- helpers -------------------------------------------------------------------------------
    def _answers(self) -> bool:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=1)
        try:
            conn.request("GET", self.probe_path)
            conn.getresponse().read()
            return True
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _request(self, method: str, path: str) -> bytes:
        req = urllib.request.Request(self.url + path, method=method, data=b"" if method != "GET" else None)
        with urllib.request.urlopen(req, timeout=10) as resp:
            body: bytes = resp.read()
            return body


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# moto's limit on one DynamoDB item (dynamo_type.LimitedSizeDict.__setitem__): "between 409 and
# 410KB" measured against DynamoDB, 405000 bytes in moto.
MOTO_ITEM_LIMIT = 405000


def linear_item_size_check() -> None:
    """Build moto's DynamoDB items with one size sum instead of one per attribute.

    moto checks the 400 KB item limit in ``LimitedSizeDict.__setitem__`` by summing the sizes of
    every attribute already set plus the new one, so ``Item.__init__``, which sets an item's n
    attributes one by one into a new dict, computes n(n+1)/2 attribute sizes: 91 for an
    inventory stone's 13, half of moto's time for each item written. Those sums are prefix sums
    of sizes that are never negative, so the first one over the limit exists exactly when the
    whole item's size is over it: one sum at the end raises the same ItemSizeTooLarge for the
    same items, and an item that fits is the same dict of the same DynamoType values. Updates of
    a stored item (``update_item``) still go through moto's own ``__setitem__``.
    tests/functional/test_servers.py builds items both ways and compares them.
    """
    from moto.dynamodb.models import dynamo_type

    def init(self: dynamo_type.Item, hash_key: dynamo_type.DynamoType,
             range_key: dynamo_type.DynamoType | None, attrs: dict[str, object]) -> None:
        self.hash_key = hash_key
        self.range_key = range_key
        values = {key: dynamo_type.DynamoType(value) for key, value in attrs.items()}
        if sum(dynamo_type.bytesize(key) + value.size() for key, value in values.items()) > MOTO_ITEM_LIMIT:
            raise dynamo_type.ItemSizeTooLarge
        self.attrs = dynamo_type.LimitedSizeDict()
        dict.update(self.attrs, values)  # dict's own update: no second check per key

    dynamo_type.Item.__init__ = init  # type: ignore[method-assign]


def moto_main() -> None:
    """``python -m moto.server`` (same arguments), with :func:`linear_item_size_check` applied."""
    from moto.server import main

    linear_item_size_check()
    main(sys.argv[1:])


class MotoServer(StandInServer):
    """moto in server mode: S3, DynamoDB, SQS, Cognito... on one port, shared by every process.

    Cognito tokens are RS256; their JWKS is at ``{url}/{pool_id}/.well-known/jwks.json``
    (see :meth:`jwks_url`) while their ``iss`` is the AWS-style URL.
    """

    name = "moto"
    probe_path = "/moto-api/"

    def __init__(self, *, region: str = DEFAULT_REGION, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.region = region

    def command(self) -> list[str]:
        # moto.server's own main, after the behaviour-preserving speed-up of moto_main().
        return [sys.executable, "-c", "from gemcast_local.servers import moto_main; moto_main()",
                "--host", self.host, "--port", str(self.port)]

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.region,
            # Lambda sets AWS_REGION and powertools reads it; keep both in step.
            "AWS_REGION": self.region,
        }

    def jwks_url(self, user_pool_id: str) -> str:
        return f"{self.url}/{user_pool_id}/.well-known/jwks.json"

    def reset(self) -> None:
        """Forget every resource in every service (moto's own reset API)."""
        self._request("POST", "/moto-api/reset")


# JVM options of the Firestore emulator (through JAVA_TOOL_OPTIONS, which every JVM reads; the
# JVM says so on stderr). Its life is a test or a demo: the client (C1) compiler alone warms up at
# a fraction of the CPU the optimizing one spends on 2 cores, and one serial collector thread is
# enough for its heap; loading 48,940 stones took ~13 s of its CPU instead of ~22 s.
EMULATOR_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


class FirestoreEmulator(StandInServer):
    """``gcloud emulators firestore start`` (Java) in its own process group."""

    name = "firestore"
    default_timeout_s = 60.0  # Java start on 2 busy cores

    def __init__(self, *, project: str = DEFAULT_PROJECT, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.project = project
        # No prompts, no update check over the network on every start.
        self._extra_env.setdefault("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        self._extra_env.setdefault("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "1")
        self._extra_env.setdefault("JAVA_TOOL_OPTIONS", os.environ.get("JAVA_TOOL_OPTIONS", EMULATOR_JAVA_OPTIONS))

    def launch(self) -> None:
        reason = gcloud_unavailable_reason()
        if reason:
            raise ServerStartError(reason)
        super().launch()

    def command(self) -> list[str]:
        gcloud = shutil.which("gcloud") or "gcloud"
        return [gcloud, "emulators", "firestore", "start", f"--host-port={self.host}:{self.port}"]

    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        return {"FIRESTORE_EMULATOR_HOST": self.host_port, "GOOGLE_CLOUD_PROJECT": self.project}

    def clear(self, project: str | None = None) -> None:
        """Delete every document of ``project``'s default database (the emulator's reset API)."""
        self._request(
            "DELETE",
            f"/emulator/v1/projects/{project or self.project}/databases/(default)/documents",
        )


class GcsEmulator(StandInServer):
    """gcp-storage-emulator (PyPI), in memory. Single-threaded: requests are served one by one."""

    name = "gcs"

    def __init__(self, *, project: str = DEFAULT_PROJECT, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.project = project

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            f"--host={self.host}",
            f"--port={self.port}",
            "--in-memory",
        ]

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.url, "GOOGLE_CLOUD_PROJECT": self.project}

    def clear(self, *, keep_buckets: bool = False) -> None:
        """Delete every object (and every bucket unless ``keep_buckets``)."""
        self._request("GET", "/wipe?keep-buckets=1" if keep_buckets else "/wipe")


class ServerGroup:
    """Start several servers in parallel and stop them all, last started first.

    ``start`` launches every process before waiting for any, so the slow Java start of the
    Firestore emulator overlaps the others. If one fails, those already running are stopped.
    """

    def __init__(self) -> None:
        self._servers: list[StandInServer] = []

    def start(self, *servers: StandInServer) -> list[StandInServer]:
        launched: list[StandInServer] = []
        try:
            for server in servers:
                server.launch()
                launched.append(server)
                self._servers.append(server)
            for server in servers:
                server.wait_ready()
        except BaseException:
            self.stop()
            raise
        return list(servers)

    @property
    def servers(self) -> list[StandInServer]:
        return list(self._servers)

    def env(self) -> dict[str, str]:
        """The union of every server's env()."""
        merged: dict[str, str] = {}
        for server in self._servers:
            merged.update(server.env())
        return merged

    def stop(self) -> None:
        errors: list[BaseException] = []
        while self._servers:
            server = self._servers.pop()
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others; re-raised below
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __iter__(self) -> Iterator[StandInServer]:
        return iter(self._servers)

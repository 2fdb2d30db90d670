"""Start, watch and stop the stack's processes (services and Envoy), each in its own process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.mesh_tls import TlsMaterial, server_name_options
from services.runtime.private_files import PRIVATE_UMASK, open_private_append, private_dir

REPO_ROOT = Path(__file__).resolve().parent.parent


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the process that started us dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    service: str | None = None  # the mesh identity a service process serves as (checked over TLS)
    popen: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> ManagedProcess:
        private_dir(self.log_path.parent)
        log = open_private_append(self.log_path)  # owned by the child for its lifetime
        self.popen = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
            start_new_session=True,  # its own group: Ctrl-C on the CLI reaches it only through us
            preexec_fn=_die_with_parent,
            umask=PRIVATE_UMASK,  # whatever a service writes (SoftHSM objects, files) is private too
        )
        log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def terminate(self) -> None:
        """SIGTERM without waiting (`stop` waits): several processes can then drain at the same time."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL: no process is left behind."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def service_process(service: str, port: int, env: dict[str, str], log_dir: Path, replica: int = 0) -> ManagedProcess:
    full_env = {**os.environ, **env, "FISCAL_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    suffix = f"-{replica}" if replica else ""
    return ManagedProcess(
        name=f"{service}{suffix}",
        argv=[sys.executable, "-m", f"services.{service}"],
        env=full_env,
        log_path=log_dir / f"{service}{suffix}.log",
        port=port,
        service=service,
    )


def wait_serving(process: ManagedProcess, timeout: float = 60.0) -> None:
    """Block until the process's gRPC health check answers SERVING (asked over mutual TLS with the
    process's own certificate: health checks answer any member of the mesh)."""
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    with health_channel(process) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if not process.alive:
                raise RuntimeError(f"{process.name} exited ({process.popen.returncode}):\n{process.log_tail()}")
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last_error = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            except grpc.RpcError as exc:
                last_error = exc.code().name
            time.sleep(0.1)
    raise TimeoutError(f"{process.name} not serving after {timeout}s ({last_error}):\n{process.log_tail()}")


def wait_answering(process: ManagedProcess, url: str, timeout: float = 30.0) -> None:
    """Block until an HTTP process (a provider simulator) answers `url` with a 2xx."""
    import httpx

    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if not process.alive:
            raise RuntimeError(f"{process.name} exited ({process.popen.returncode}):\n{process.log_tail()}")
        try:
            answer = httpx.get(url, timeout=1.0, trust_env=False)
            if answer.is_success:
                return
            last_error = f"HTTP {answer.status_code}"
        except httpx.HTTPError as exc:
            last_error = type(exc).__name__
        time.sleep(0.1)
    raise TimeoutError(f"{process.name} not answering after {timeout}s ({last_error}):\n{process.log_tail()}")


def health_channel(process: ManagedProcess) -> grpc.Channel:
    """A channel to a service process that presents the process's own mesh certificate."""
    env = process.env
    tls = TlsMaterial.from_files(env["FISCAL_TLS_CERT"], env["FISCAL_TLS_KEY"], env["FISCAL_TLS_CA"])
    return grpc.secure_channel(f"127.0.0.1:{process.port}", tls.channel_credentials(),
                               options=server_name_options(process.service or process.name))

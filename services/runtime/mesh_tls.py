"""Mutual TLS inside the mesh: every server and client presents a certificate signed by the mesh CA,
and every server checks, per call, which service is calling.

A service's identity is in its certificate: the SAN URI spiffe://fiscal.local/<identity> (and the CN
and a SAN DNS name <identity>, which clients verify the server against). Identities: counter, signing,
ledger, webhooks, payments, gateway (Envoy, upstream), operator (the `fiscal` CLI's admin calls).

Environment (paths, e.g. mounted from a Kubernetes secret):
  FISCAL_TLS_CERT: this process's certificate (PEM), FISCAL_TLS_KEY: its private key (PEM),
  FISCAL_TLS_CA: the mesh CA certificate(s) (PEM) that peers must chain to.
The files are read once at start: a renewed certificate takes effect at the next restart.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

TRUST_DOMAIN = "fiscal.local"
SPIFFE_PREFIX = f"spiffe://{TRUST_DOMAIN}/"
# Health checks and reflection answer any authenticated member of the mesh.
ANY_MEMBER_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                       "grpc.reflection.v1.ServerReflection")


def spiffe_id(identity: str) -> str:
    return SPIFFE_PREFIX + identity


@dataclass(frozen=True)
class TlsMaterial:
    """One process's certificate, key and the CA it trusts, as PEM bytes."""

    cert: bytes
    key: bytes
    ca: bytes

    @classmethod
    def from_files(cls, cert: str | Path, key: str | Path, ca: str | Path) -> TlsMaterial:
        return cls(Path(cert).read_bytes(), Path(key).read_bytes(), Path(ca).read_bytes())

    @classmethod
    def from_env(cls) -> TlsMaterial:
        paths = {name: os.environ.get(name, "") for name in ("FISCAL_TLS_CERT", "FISCAL_TLS_KEY", "FISCAL_TLS_CA")}
        missing = [name for name, value in paths.items() if not value]
        if missing:
            raise SystemExit(f"mesh TLS: missing environment variable(s) {', '.join(missing)} "
                             "(every service and client of the mesh needs a certificate)")
        try:
            return cls.from_files(paths["FISCAL_TLS_CERT"], paths["FISCAL_TLS_KEY"], paths["FISCAL_TLS_CA"])
        except OSError as exc:
            raise SystemExit(f"mesh TLS: cannot read {exc.filename}: {exc.strerror}") from None

    def server_credentials(self) -> grpc.ServerCredentials:
        # require_client_auth: a caller without a certificate from the mesh CA fails the handshake.
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca,
                                           require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)


@functools.cache
def process_tls() -> TlsMaterial:
    """This process's TLS material from the environment (read once)."""
    return TlsMaterial.from_env()


def server_name_options(service: str) -> list[tuple[str, str]]:
    """Verify the server as `service` whatever address it is reached at (127.0.0.1:port, a pod IP)."""
    return [("grpc.ssl_target_name_override", service)]


def peer_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The verified caller's identity: its SPIFFE URI SAN, else its certificate's common name."""
    auth = context.auth_context() or {}
    for value in auth.get("peer_spiffe_id", []) + auth.get("x509_subject_alternative_name", []):
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        if text.startswith(SPIFFE_PREFIX):
            return text[len(SPIFFE_PREFIX):]
    common_names = auth.get("x509_common_name", [])
    return common_names[0].decode(errors="replace") if common_names else None


AllowTable = Mapping[str, Iterable[str]]


class CallerAuthorization(grpc.aio.ServerInterceptor):
    """Allow a call only when the caller's identity is listed for its method.

    `allowed` maps a full method ("/fiscal.v1.CounterService/Allocate") to the identities allowed to
    call it. A method not listed is refused to everyone, except health checks and reflection, which any
    authenticated member of the mesh may call. A refusal is PERMISSION_DENIED.
    """

    def __init__(self, allowed: AllowTable):
        self.allowed = {method: frozenset(identities) for method, identities in allowed.items()}

    def _permits(self, method: str, identity: str | None) -> bool:
        if identity is None:
            return False
        service = method.lstrip("/").split("/", 1)[0]
        if service in ANY_MEMBER_SERVICES:
            return True
        return identity in self.allowed.get(method, ())

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        return _guarded(handler, lambda context: self._check(method, context))

    async def _check(self, method: str, context) -> None:
        identity = peer_identity(context)
        if not self._permits(method, identity):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"{identity or 'an unidentified caller'} may not call {method}")


def _guarded(handler: grpc.RpcMethodHandler, check: Callable) -> grpc.RpcMethodHandler:
    """The same handler, running `check(context)` before its behaviour."""
    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary_unary(request, context):
            await check(context)
            return await inner(request, context)

        return handler._replace(unary_unary=unary_unary)
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def unary_stream(request, context):
            await check(context)
            result = inner_us(request, context)
            if hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            else:
                await result

        return handler._replace(unary_stream=unary_stream)
    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def stream_unary(request_iterator, context):
            await check(context)
            return await inner_su(request_iterator, context)

        return handler._replace(stream_unary=stream_unary)
    inner_ss = handler.stream_stream

    async def stream_stream(request_iterator, context):
        await check(context)
        result = inner_ss(request_iterator, context)
        if hasattr(result, "__aiter__"):
            async for item in result:
                yield item
        else:
            await result

    return handler._replace(stream_stream=stream_stream)

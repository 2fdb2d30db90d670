"""Client channels to other services of the mesh.

An address may list several replicas ("127.0.0.1:7101,127.0.0.1:7111"): the channel then balances
round-robin across them and skips one that is down. In Kubernetes, "dns:///counter:7101" against a
headless Service does the same. Every channel is mutual TLS (services/runtime/mesh_tls.py): this
process presents its certificate and checks that the server is `service`.
"""

from __future__ import annotations

import json

import grpc

from services.runtime.mesh_tls import process_tls, server_name_options
from services.runtime.telemetry import client_interceptors

_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def grpc_target(address: str) -> str:
    address = address.strip()
    if "://" in address or address.startswith(("ipv4:", "ipv6:", "unix:")):
        return address
    if "," in address:
        return "ipv4:" + ",".join(part.strip() for part in address.split(","))
    return address


def open_channel(address: str, service: str) -> grpc.aio.Channel:
    """A channel to the mesh's `service` (its certificate must name it) at `address`."""
    return grpc.aio.secure_channel(
        grpc_target(address),
        process_tls().channel_credentials(),
        options=[
            *server_name_options(service),
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            # Reconnect quickly after a replica restarts.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.min_reconnect_backoff_ms", 100),
        ],
        interceptors=client_interceptors(),
    )

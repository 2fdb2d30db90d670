"""Client channels to other services of the mesh.

An address may list several replicas ("127.0.0.1:7101,127.0.0.1:7111"): the channel then balances
round-robin across them and skips one that is down. In Kubernetes, "dns:///counter:7101" against a
headless Service does the same.
"""

from __future__ import annotations

import json

import grpc

from services.runtime.telemetry import client_interceptors

_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def grpc_target(address: str) -> str:
    address = address.strip()
    if "://" in address or address.startswith(("ipv4:", "ipv6:", "unix:")):
        return address
    if "," in address:
        return "ipv4:" + ",".join(part.strip() for part in address.split(","))
    return address


def open_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        grpc_target(address),
        options=[
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            # Reconnect quickly after a replica restarts.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.min_reconnect_backoff_ms", 100),
        ],
        interceptors=client_interceptors(),
    )

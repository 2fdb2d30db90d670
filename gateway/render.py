"""Render gateway/envoy.yaml for one deployment of the mesh (ports, replicas, tracing)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

GATEWAY_DIR = Path(__file__).resolve().parent
TEMPLATE = GATEWAY_DIR / "envoy.yaml"
DESCRIPTOR = GATEWAY_DIR / "fiscal.pb"


@dataclass
class GatewayPlan:
    listen_port: int
    admin_port: int
    # cluster name -> ["host:port", ...] (one per replica)
    upstreams: dict[str, list[str]]
    otlp_endpoint: str | None = None  # "host:port" of an OTLP/gRPC collector
    listen_host: str = "127.0.0.1"
    extra: dict = field(default_factory=dict)


def _endpoint(address: str) -> dict:
    host, port = address.rsplit(":", 1)
    return {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}


def _grpc_cluster(name: str, addresses: list[str], health_checked: bool = True) -> dict:
    cluster = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [_endpoint(a) for a in addresses]}]},
    }
    if health_checked:
        cluster["health_checks"] = [{
            "timeout": "1s", "interval": "1s", "unhealthy_threshold": 2, "healthy_threshold": 1,
            "grpc_health_check": {},
        }]
        # A replica that fails a request is taken out until it answers health checks again.
        cluster["outlier_detection"] = {"consecutive_5xx": 3, "base_ejection_time": "2s"}
    return cluster


def render(plan: GatewayPlan) -> dict:
    config = copy.deepcopy(yaml.safe_load(TEMPLATE.read_text()))
    config["admin"]["address"]["socket_address"]["port_value"] = plan.admin_port
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address=plan.listen_host, port_value=plan.listen_port)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for http_filter in hcm["http_filters"]:
        cfg = http_filter.get("typed_config", {})
        if http_filter["name"] == "envoy.filters.http.grpc_json_transcoder":
            cfg["proto_descriptor"] = str(DESCRIPTOR)
        if http_filter["name"] == "envoy.filters.http.health_check":
            cfg["cluster_min_healthy_percentages"] = {name: {"value": 100.0} for name in plan.upstreams}
    clusters = [_grpc_cluster(name, addresses) for name, addresses in plan.upstreams.items()]
    if plan.otlp_endpoint:
        clusters.append(_grpc_cluster("otel_collector", [plan.otlp_endpoint], health_checked=False))
        hcm["tracing"] = {
            "random_sampling": {"value": 100},
            "provider": {
                "name": "envoy.tracers.opentelemetry",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                    "grpc_service": {"envoy_grpc": {"cluster_name": "otel_collector"}, "timeout": "1s"},
                    "service_name": "fiscal-gateway",
                },
            },
        }
    config["static_resources"]["clusters"] = clusters
    return config


def write(plan: GatewayPlan, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(render(plan), indent=1))
    return path

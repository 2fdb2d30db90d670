"""Render gateway/envoy.yaml for one deployment of the mesh (ports, replicas, tracing)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from services.runtime.config import env_float
from services.runtime.mesh_tls import spiffe_id
from services.runtime.private_files import private_dir, write_private
from services.runtime.telemetry import sample_ratio

GATEWAY_DIR = Path(__file__).resolve().parent
TEMPLATE = GATEWAY_DIR / "envoy.yaml"
DESCRIPTOR = GATEWAY_DIR / "fiscal.pb"


@dataclass
class GatewayPlan:
    listen_port: int
    admin_port: int
    # cluster name -> ["host:port", ...] (one per replica): ledger, webhooks, payments (routed), counter,
    # signing
    upstreams: dict[str, list[str]]
    otlp_endpoint: str | None = None  # "host:port" of an OTLP/gRPC collector
    # Mutual TLS to the mesh: paths of the gateway's certificate, its key and the mesh CA
    # ({"cert": ..., "key": ..., "ca": ...}). Envoy presents the gateway identity to every service.
    upstream_tls: dict[str, str] | None = None
    listen_host: str = "127.0.0.1"
    extra: dict = field(default_factory=dict)
    # Share of new traces Envoy records (0 to 1); None: FISCAL_TRACES_SAMPLE_RATIO, as the services read
    # it (default 0.01). A request that arrives with a sampled traceparent is traced whatever the ratio.
    trace_sample_ratio: float | None = None
    # Envoy's deadline for a seal (SealInvoice, CreateCreditNote), answered 503 + Retry-After past it;
    # None: FISCAL_SEAL_TIMEOUT_SECONDS (default 1).
    seal_timeout_seconds: float | None = None


SEAL_PATHS = ("/fiscal.v1.InvoiceService/SealInvoice", "/fiscal.v1.InvoiceService/CreateCreditNote")
# Services a deployment may run without: their routes are left out when the plan has no upstream for them
# (their REST paths then answer 404 like any unknown path).
OPTIONAL_CLUSTERS = frozenset({"payments"})


def seal_timeout(plan: GatewayPlan) -> float:
    seconds = plan.seal_timeout_seconds if plan.seal_timeout_seconds is not None else env_float(
        "FISCAL_SEAL_TIMEOUT_SECONDS", 1.0)
    if seconds <= 0:
        raise SystemExit("FISCAL_SEAL_TIMEOUT_SECONDS must be more than 0")
    return seconds


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
                "explicit_http_config": {"http2_protocol_options": {
                    # One HTTP/2 connection per Envoy worker carries every call; a bound on its streams
                    # keeps a burst from opening unbounded streams on the service (its admission control
                    # answers the excess), and a ping notices a dead replica on an idle connection.
                    "max_concurrent_streams": 1024,
                    "connection_keepalive": {"interval": "30s", "timeout": "5s"},
                }},
                # Keep the warm connection to the mesh (TLS handshakes are dear); drop it after an hour idle.
                "common_http_protocol_options": {"idle_timeout": "3600s"},
            }
        },
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [_endpoint(a) for a in addresses]}]},
        # Requests Envoy keeps open to the cluster at once (all replicas). Past it Envoy answers 503 at once
        # (with Retry-After, see envoy.yaml), so a flood beyond what the services' admission control
        # refuses never becomes a queue in Envoy. Pending requests only wait for a connection.
        # Retries (see the route's retry_policy) are bounded by a budget, a fifth of the requests in flight
        # (at least 16), rather than Envoy's default of 3 at once: a replica going away under load fails
        # many calls together, and each must get its second try.
        "circuit_breakers": {"thresholds": [{"priority": "DEFAULT", "max_requests": 2048,
                                             "max_pending_requests": 1024,
                                             "retry_budget": {"budget_percent": {"value": 20.0},
                                                              "min_retry_concurrency": 16}}]},
    }
    if health_checked:
        cluster["health_checks"] = [{
            "timeout": "1s", "interval": "1s", "unhealthy_threshold": 2, "healthy_threshold": 1,
            # Envoy routes no traffic to counter and signing (only /healthz looks at them): without this
            # it would check them once a minute (its default) and /healthz would answer from stale state.
            "no_traffic_interval": "1s",
            "grpc_health_check": {},
        }]
        # A replica that fails a request is taken out until it answers health checks again.
        cluster["outlier_detection"] = {"consecutive_5xx": 3, "base_ejection_time": "2s"}
    return cluster


def _upstream_tls(service: str, tls: dict[str, str]) -> dict:
    """Envoy's client side of the mesh's mutual TLS: the gateway certificate, and the server must be
    `service` (its SPIFFE URI SAN) under the mesh CA. Health checks use the same connection settings."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": service,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [{"certificate_chain": {"filename": tls["cert"]},
                                      "private_key": {"filename": tls["key"]}}],
                "validation_context": {
                    "trusted_ca": {"filename": tls["ca"]},
                    "match_typed_subject_alt_names": [
                        {"san_type": "URI", "matcher": {"exact": spiffe_id(service)}}],
                },
            },
        },
    }


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
            # Healthy while each service has at least one healthy replica: the threshold is below one
            # replica's share and above none.
            cfg["cluster_min_healthy_percentages"] = {
                name: {"value": 100.0 / (len(addresses) + 1)} for name, addresses in plan.upstreams.items()}
    routed = set()
    virtual_host = hcm["route_config"]["virtual_hosts"][0]
    virtual_host["routes"] = [route for route in virtual_host["routes"]
                              if route.get("route", {}).get("cluster") not in OPTIONAL_CLUSTERS - plan.upstreams.keys()]
    for route in virtual_host["routes"]:
        if route["match"].get("path") in SEAL_PATHS:
            route["route"]["timeout"] = f"{seal_timeout(plan):.3f}s"
        if "cluster" in route.get("route", {}):
            routed.add(route["route"]["cluster"])
    if missing := sorted(routed - plan.upstreams.keys()):
        # Envoy would refuse the whole configuration with a less direct message.
        raise SystemExit(f"gateway: no upstream addresses for {', '.join(missing)} (routes in envoy.yaml use it)")
    clusters = [_grpc_cluster(name, addresses) for name, addresses in plan.upstreams.items()]
    if plan.upstream_tls:
        for cluster in clusters:
            cluster["transport_socket"] = _upstream_tls(cluster["name"], plan.upstream_tls)
    if plan.otlp_endpoint:
        clusters.append(_grpc_cluster("otel_collector", [plan.otlp_endpoint], health_checked=False))
        ratio = plan.trace_sample_ratio if plan.trace_sample_ratio is not None else sample_ratio()
        hcm["tracing"] = {
            # Percent of requests that start a trace (a caller's sampled traceparent is always followed);
            # the services sample parent-based, so a trace is recorded whole or not at all.
            "random_sampling": {"value": ratio * 100.0},
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
    private_dir(path.parent)
    return write_private(path, json.dumps(render(plan), indent=1))

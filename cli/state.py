"""Where a running `fiscal up` is: <data-dir>/stack.json, read by the other commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc

from services.runtime.channels import grpc_target
from services.runtime.config import sqlalchemy_url
from services.runtime.db_roles import role_url
from services.runtime.mesh_tls import TlsMaterial, server_name_options
from services.runtime.private_files import write_private

DEFAULT_DATA_DIR = Path(os.environ.get("FISCAL_DATA_DIR", ".fiscal"))


def write_state(data_dir: Path, state: dict) -> None:
    write_private(data_dir / "stack.json", json.dumps(state, indent=2))


def read_state(data_dir: Path) -> dict:
    path = data_dir / "stack.json"
    if not path.exists():
        raise SystemExit(f"no running stack found in {data_dir} (start one with `fiscal up --data-dir {data_dir}`)")
    return json.loads(path.read_text())


def database_url(args) -> str:
    """--database-url, else the database of the stack running in --data-dir, else DATABASE_URL."""
    if getattr(args, "database_url", None):
        return args.database_url
    if (args.data_dir / "stack.json").exists():
        return read_state(args.data_dir)["database_url"]
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    raise SystemExit(f"no database: pass --database-url, set DATABASE_URL, or run `fiscal up --data-dir {args.data_dir}`")


def ledger_database_url(args) -> str:
    """For the ledger's admin commands: --database-url or DATABASE_URL as given; else the running stack's
    database as the ledger's own role (password in <data-dir>/database-roles.json), so the commands have
    exactly the ledger's rights; a stack without roles gives its owner URL."""
    if getattr(args, "database_url", None) or not (args.data_dir / "stack.json").exists():
        return database_url(args)
    roles = args.data_dir / "database-roles.json"
    password = json.loads(roles.read_text()).get("ledger") if roles.exists() else None
    admin_url = read_state(args.data_dir)["database_url"]
    return role_url(admin_url, "ledger", password) if password else admin_url


def operator_channel(args, service: str, address: str) -> grpc.Channel:
    """An mTLS channel to a mesh service as the "operator" identity (admin calls such as key rotation):
    the certificate in FISCAL_TLS_CERT / _KEY / _CA when set (production), else the development one
    `fiscal up` made in <data-dir>/mesh-tls/."""
    from stack.mesh_certs import MeshCertificates

    if os.environ.get("FISCAL_TLS_CERT"):
        tls = TlsMaterial.from_env()
    else:
        certificates = MeshCertificates(args.data_dir / "mesh-tls")
        if not certificates.cert_path("operator").exists():
            raise SystemExit(f"no operator certificate in {certificates.directory}: set FISCAL_TLS_CERT, "
                             "FISCAL_TLS_KEY and FISCAL_TLS_CA, or pass the --data-dir of `fiscal up`")
        tls = certificates.material("operator")
    return grpc.secure_channel(grpc_target(address), tls.channel_credentials(), options=server_name_options(service))


def async_url(url: str) -> str:
    return sqlalchemy_url(url)

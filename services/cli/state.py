"""Where a running `fiscal up` is: <data-dir>/stack.json, read by the other commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_DATA_DIR = Path(os.environ.get("FISCAL_DATA_DIR", ".fiscal"))


def write_state(data_dir: Path, state: dict) -> None:
    path = data_dir / "stack.json"
    path.write_text(json.dumps(state, indent=2))
    path.chmod(0o600)


def read_state(data_dir: Path) -> dict:
    path = data_dir / "stack.json"
    if not path.exists():
        raise SystemExit(f"no running stack found in {data_dir} (start one with `fiscal up --data-dir {data_dir}`)")
    return json.loads(path.read_text())


def database_url(args) -> str:
    url = getattr(args, "database_url", None) or os.environ.get("DATABASE_URL") or read_state(args.data_dir)["database_url"]
    return url


def async_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url

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
    """--database-url, else the database of the stack running in --data-dir, else DATABASE_URL."""
    if getattr(args, "database_url", None):
        return args.database_url
    if (args.data_dir / "stack.json").exists():
        return read_state(args.data_dir)["database_url"]
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    raise SystemExit(f"no database: pass --database-url, set DATABASE_URL, or run `fiscal up --data-dir {args.data_dir}`")


def async_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url

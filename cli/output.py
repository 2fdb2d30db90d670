"""The one console every `fiscal` command prints through."""

from __future__ import annotations

import sys

from rich.console import Console

# Piped into a file or another program, rich would wrap and truncate at 80 columns: ids and keys must
# come out whole.
console = Console(width=None if sys.stdout.isatty() else 220)

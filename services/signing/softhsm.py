"""Set up a SoftHSM2 token in a directory (local runs, tests, the CLI)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from services.runtime.private_files import PRIVATE_UMASK, private_dir, write_private

DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def init_softhsm_token(directory: str | os.PathLike, label: str = "fiscal", pin: str = "1234",
                       so_pin: str = "5678", module: str = DEFAULT_MODULE) -> dict[str, str]:
    """Write `<directory>/softhsm2.conf` (tokens in `<directory>/tokens`), initialise a token `label`
    with the given PINs unless one with that label is already there, and return the environment a
    signing service needs to use it (SOFTHSM2_CONF and the FISCAL_PKCS11_* settings)."""
    util = shutil.which("softhsm2-util")
    if util is None or not os.path.exists(module):
        raise RuntimeError("SoftHSM2 is not installed (apt-get install -y softhsm2)")
    root = Path(directory).resolve()
    tokens = root / "tokens"
    private_dir(tokens)
    conf = write_private(root / "softhsm2.conf", f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                         "log.level = ERROR\nslots.removable = false\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    listing = subprocess.run([util, "--show-slots"], env=env, capture_output=True, text=True, check=True)
    if f"Label:            {label}\n" not in listing.stdout and not _has_label(listing.stdout, label):
        subprocess.run([util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
                       env=env, capture_output=True, text=True, check=True, umask=PRIVATE_UMASK)
    return {
        "SOFTHSM2_CONF": str(conf),
        "FISCAL_SIGNING_BACKEND": "pkcs11",
        "FISCAL_PKCS11_MODULE": module,
        "FISCAL_PKCS11_TOKEN_LABEL": label,
        "FISCAL_PKCS11_PIN": pin,
    }


def _has_label(show_slots: str, label: str) -> bool:
    return any(line.split(":", 1)[1].strip() == label
               for line in show_slots.splitlines() if line.strip().startswith("Label:") and ":" in line)

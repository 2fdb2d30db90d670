"""A pytest plugin: no log of the test run may contain a secret the run used.

While the session runs it collects every secret that passes through the stack's entry points: the
API keys provisioning returns (stack.seed.provision_merchant), SoftHSM PINs (init_softhsm_token), the
secret-named environment values of every process started (passphrases, PINs, role passwords, the page
token key; passwords in database URLs), and at the end the secrets.json, database-roles.json and
demo.json files the run made. At session end it scans every log file under pytest's temporary tree, every mesh data
directory and every started process's log, and fails the session naming the file and the kind of
secret (never the secret) when one is found. Registered by tests/conftest.py (pytest_plugins).
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Environment variables whose values are secrets (services/runtime/logs.py redacts the same names).
SECRET_ENV = re.compile(r"(PASSWORD|PASSPHRASE|_PIN|SECRET|TOKEN_KEY|SECRET_KEY|_CREDENTIALS|_TOKEN)$")
URL_PASSWORD = re.compile(r"postgres(?:ql)?(?:\+\w+)?://[^:/@\s]*:([^@\s]+)@")
# A short secret (a 4-digit PIN) would match unrelated numbers; it counts only right after its name.
SHORT = 8
CONTEXT = rb"(?i)(?:pin|passphrase|password|secret|key)[^A-Za-z0-9\n]{1,5}"
# `fiscal up` prints the demo merchant's keys to its user by design; a test's capture of that terminal
# (file name -> kinds allowed in it) may show those, and nothing else.
CONSOLE_TRANSCRIPTS = {"up.log": ("demo ",)}


@dataclass
class SecretsAudit:
    secrets: dict[str, str] = field(default_factory=dict)   # value -> kind
    roots: set[Path] = field(default_factory=set)            # where logs are
    data_dirs: set[Path] = field(default_factory=set)        # mesh data directories

    def add(self, value, kind: str) -> None:
        if isinstance(value, str) and value and value not in self.secrets:
            self.secrets[value] = kind

    def add_env(self, env: dict[str, str]) -> None:
        for name, value in env.items():
            if SECRET_ENV.search(name):
                self.add(value, f"environment value {name}")
            for password in URL_PASSWORD.findall(value or ""):
                self.add(password, f"database password in {name}")

    def add_provisioned(self, merchant: dict, origin: str = "") -> None:
        self.add(merchant.get("admin_key"), f"{origin}admin API key")
        self.add(merchant.get("read_key"), f"{origin}read API key")
        for key in (merchant.get("pos_keys") or {}).values():
            self.add(key, f"{origin}POS API key")

    def collect_files(self) -> None:
        """Secrets kept in files: mesh secrets.json and `fiscal up`'s demo.json, wherever the run made them
        (also by `fiscal up` subprocesses, whose calls this process does not see)."""
        for root in self.roots | self.data_dirs:
            if not root.is_dir():
                continue
            for secrets_file in root.rglob("secrets.json"):
                for name, value in json.loads(secrets_file.read_text()).items():
                    self.add(value, f"mesh secret {name}")
            for roles in root.rglob("database-roles.json"):  # per-service PostgreSQL role passwords
                for service, password in json.loads(roles.read_text()).items():
                    self.add(password, f"database role password ({service})")
            for demo in root.rglob("demo.json"):
                self.add_provisioned(json.loads(demo.read_text()), origin="demo ")

    def log_files(self) -> list[Path]:
        found = set()
        for root in self.roots | self.data_dirs:
            if root.is_file():
                found.add(root)
            elif root.is_dir():
                found.update(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                             and (p.suffix == ".log" or "logs" in p.parent.parts))
        return sorted(found)

    def _patterns(self) -> list[tuple[re.Pattern, str]]:
        return [(re.compile(re.escape(value.encode()) if len(value) >= SHORT
                            else CONTEXT + re.escape(value.encode()) + rb"(?![A-Za-z0-9])"), kind)
                for value, kind in self.secrets.items()]

    def findings(self) -> list[str]:
        """'<file>: <kind>' for every secret found in a log; the secret itself is never named."""
        patterns = self._patterns()
        problems = []
        for path in self.log_files():
            try:
                content = path.read_bytes()
            except OSError:
                continue
            allowed = CONSOLE_TRANSCRIPTS.get(path.name, ())
            kinds = sorted({kind for pattern, kind in patterns
                            if not kind.startswith(allowed or ("\0",)) and pattern.search(content)})
            problems += [f"{path}: {kind}" for kind in kinds]
        return problems


AUDIT = SecretsAudit()


def _record_result(function, record):
    if getattr(function, "_secrets_audit", False):
        return function

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        record(result, args, kwargs)
        return result

    @functools.wraps(function)
    async def async_wrapper(*args, **kwargs):
        result = await function(*args, **kwargs)
        record(result, args, kwargs)
        return result

    chosen = async_wrapper if inspect.iscoroutinefunction(function) else wrapper
    chosen._secrets_audit = True
    return chosen


def _install() -> None:
    """Watch the entry points secrets pass through. Installed before the test modules are imported, so
    their `from ... import` names get the watched functions."""
    import services.signing.softhsm as softhsm
    import stack.mesh as mesh
    import stack.processes as processes
    import stack.seed as seed

    seed.provision_merchant = _record_result(seed.provision_merchant,
                                             lambda result, args, kwargs: AUDIT.add_provisioned(result))

    signature = inspect.signature(softhsm.init_softhsm_token)

    def record_pins(result, args, kwargs):
        call = signature.bind(*args, **kwargs)
        call.apply_defaults()
        AUDIT.add(call.arguments["pin"], "SoftHSM PIN")
        AUDIT.add(call.arguments["so_pin"], "SoftHSM SO PIN")
        AUDIT.add_env(result)
        AUDIT.roots.add(Path(call.arguments["directory"]))
    softhsm.init_softhsm_token = _record_result(softhsm.init_softhsm_token, record_pins)

    original_start = processes.ManagedProcess.start
    if not getattr(original_start, "_secrets_audit", False):
        def start(self, *args, **kwargs):
            AUDIT.add_env(self.env)
            AUDIT.roots.add(Path(self.log_path))
            return original_start(self, *args, **kwargs)
        start._secrets_audit = True
        processes.ManagedProcess.start = start

    original_init = mesh.Mesh.__init__
    if not getattr(original_init, "_secrets_audit", False):
        def init(self, options, *args, **kwargs):
            original_init(self, options, *args, **kwargs)
            AUDIT.data_dirs.add(Path(options.data_dir))
        init._secrets_audit = True
        mesh.Mesh.__init__ = init


_install()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        try:
            AUDIT.roots.add(factory.getbasetemp())
        except (OSError, ValueError):
            pass
    AUDIT.collect_files()
    problems = AUDIT.findings()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if problems:
        message = (f"secrets audit: {len(problems)} secret(s) found in logs of this run "
                   "(file: kind of secret):\n  " + "\n  ".join(problems))
        if reporter:
            reporter.write_sep("=", "secrets audit failed", red=True)
            reporter.write_line(message)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter and AUDIT.secrets:
        reporter.write_line(f"secrets audit: {len(AUDIT.secrets)} secrets, {len(AUDIT.log_files())} log files, "
                            "none found")

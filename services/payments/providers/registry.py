"""The provider adapters by name ("mpesa", "airtel_money", "orange_money"), imported on first use.

Each adapter module (providers/mpesa.py, airtel.py, orange.py) exposes `ADAPTER`, an instance of its
ProviderAdapter (base.py); a module without it may expose the class named below, made with no arguments.
A provider whose module is missing or broken is "not available" (a FAILED_PRECONDITION for whoever asked)
while the others keep working.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import structlog

from services.payments.providers.base import ProviderAdapter

log = structlog.get_logger()

# name -> (module, class name)
MODULES: dict[str, tuple[str, str]] = {
    "mpesa": ("services.payments.providers.mpesa", "MpesaAdapter"),
    "airtel_money": ("services.payments.providers.airtel", "AirtelMoneyAdapter"),
    "orange_money": ("services.payments.providers.orange", "OrangeMoneyAdapter"),
}


class ProviderUnavailable(Exception):
    """No adapter for this provider in this build."""


class ProviderRegistry:
    """Adapters by name. Tests give their own (`adapters=`); the service imports the real ones lazily."""

    def __init__(self, adapters: Mapping[str, ProviderAdapter] | None = None):
        self._adapters: dict[str, ProviderAdapter] = dict(adapters or {})
        self._fixed = adapters is not None

    def adapter(self, name: str) -> ProviderAdapter:
        found = self._adapters.get(name)
        if found is not None:
            return found
        if self._fixed or name not in MODULES:
            raise ProviderUnavailable(f"no adapter for provider {name!r}")
        module_name, class_name = MODULES[name]
        try:
            module = importlib.import_module(module_name)
            adapter = getattr(module, "ADAPTER", None) or getattr(module, class_name)()
        except (ImportError, AttributeError, TypeError) as exc:
            log.error("payment provider adapter not available", provider=name, error=type(exc).__name__)
            raise ProviderUnavailable(f"provider {name} is not available in this deployment") from None
        self._adapters[name] = adapter
        return adapter

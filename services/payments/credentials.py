"""Which credentials a call to a provider uses for an outlet: the outlet's own settings (sealed at rest
with FISCAL_PAYMENTS_SECRET_KEY, associated data = the settings row id), else the deployment's default
credentials for that provider (FISCAL_<PROVIDER>_DEFAULT_CREDENTIALS, JSON: the simulators' in
development, unset in production), else "not configured".

Environment:
  FISCAL_MPESA_API_URL, FISCAL_AIRTEL_API_URL, FISCAL_ORANGE_API_URL: the deployment's provider base URLs
  FISCAL_MPESA_DEFAULT_CREDENTIALS, FISCAL_AIRTEL_DEFAULT_CREDENTIALS, FISCAL_ORANGE_DEFAULT_CREDENTIALS:
    JSON objects keyed by the field names of payments.proto's MpesaSettings/AirtelSettings/OrangeSettings
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.payments import domain
from services.payments.providers.base import ProviderAdapter, ProviderCredentials
from services.payments.store import PaymentStore, Settings
from services.runtime.faults import FailedPrecondition
from services.runtime.secret_box import SecretBox, SecretBoxError

ENV_PREFIX = {domain.MPESA: "FISCAL_MPESA", domain.AIRTEL: "FISCAL_AIRTEL", domain.ORANGE: "FISCAL_ORANGE"}


@dataclass(frozen=True)
class Deployment:
    """The deployment's base URL and default credentials for one provider."""

    api_base_url: str
    default_credentials: Mapping[str, str] | None

    @classmethod
    def from_env(cls, provider: str) -> Deployment:
        prefix = ENV_PREFIX[provider]
        url = os.environ.get(f"{prefix}_API_URL", "").strip().rstrip("/")
        raw = os.environ.get(f"{prefix}_DEFAULT_CREDENTIALS", "").strip()
        defaults = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                raise SystemExit(f"{prefix}_DEFAULT_CREDENTIALS must be a JSON object") from None
            if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
                raise SystemExit(f"{prefix}_DEFAULT_CREDENTIALS must be a JSON object of strings")
            defaults = parsed
        return cls(url, defaults)


def seal_secrets(box: SecretBox, settings_id: str, secrets: Mapping[str, str]) -> bytes:
    return box.seal(json.dumps(dict(secrets), sort_keys=True), settings_id.encode())


def open_secrets(box: SecretBox, settings: Settings) -> dict[str, str]:
    if settings.secrets_sealed is None:
        return {}
    try:
        opened = json.loads(box.open(settings.secrets_sealed, settings.id.encode()))
    except (SecretBoxError, ValueError):
        # Another key (FISCAL_PAYMENTS_SECRET_KEY changed) or a damaged row: the merchant must set them again.
        raise FailedPrecondition("the stored provider credentials cannot be read: set them again",
                                 reason="PROVIDER_CREDENTIALS_UNREADABLE") from None
    return {str(k): str(v) for k, v in opened.items()}


class ProviderAccess:
    def __init__(self, store: PaymentStore, box: SecretBox, deployments: Mapping[str, Deployment]):
        self.store = store
        self.box = box
        self.deployments = dict(deployments)

    @classmethod
    def from_env(cls, store: PaymentStore, box: SecretBox) -> ProviderAccess:
        return cls(store, box, {provider: Deployment.from_env(provider) for provider in domain.PROVIDERS})

    def base_url(self, settings_url: str, provider: str) -> str:
        return settings_url or self.deployments.get(provider, Deployment("", None)).api_base_url

    async def credentials(self, outlet_id: str, provider: str, adapter: ProviderAdapter) -> ProviderCredentials:
        """The outlet's credentials for `provider`. FailedPrecondition when there are none, the provider is
        disabled for the outlet, or no base URL is known."""
        settings = await self.store.get_settings(outlet_id, provider)
        if settings is not None:
            if not settings.enabled:
                raise FailedPrecondition(f"{provider} is disabled for this outlet", reason="PROVIDER_DISABLED")
            secrets, values = open_secrets(self.box, settings), dict(settings.settings)
        else:
            deployment = self.deployments.get(provider)
            if deployment is None or deployment.default_credentials is None:
                raise FailedPrecondition("provider not configured for this outlet: set its credentials with "
                                         f"PUT /v1/outlets/{{outlet_id}}/payment-providers/{provider}",
                                         reason="PROVIDER_NOT_CONFIGURED")
            secrets, values = domain.split_credentials(deployment.default_credentials, adapter.secret_fields,
                                                       adapter.setting_fields)
        base_url = self.base_url(settings.api_base_url if settings is not None else "", provider)
        if not base_url:
            raise FailedPrecondition(f"no API URL for {provider}: set api_base_url for this outlet",
                                     reason="PROVIDER_NOT_CONFIGURED")
        return ProviderCredentials(api_base_url=base_url, secrets=secrets, settings=values)

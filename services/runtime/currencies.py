"""ISO 4217 currencies the platform serves and their minor units: shared by the ledger (invoice
arithmetic, services/ledger/money.py) and payments (amounts asked of a mobile-money provider)."""

from __future__ import annotations

# Anything not listed is refused rather than guessed.
MINOR_UNITS: dict[str, int] = {
    "KES": 2, "CDF": 2, "USD": 2, "EUR": 2, "NGN": 2, "GHS": 2, "ZAR": 2, "TZS": 2, "MAD": 2, "ETB": 2,
    "EGP": 2, "ZMW": 2, "MWK": 2, "MZN": 2, "AOA": 2, "BWP": 2, "NAD": 2, "SCR": 2, "MUR": 2, "SSP": 2,
    "SDG": 2, "LRD": 2, "SLE": 2, "GMD": 2, "CVE": 2, "STN": 2, "ERN": 2, "SZL": 2, "LSL": 2, "MGA": 2,
    "TND": 3, "LYD": 3,
    "XOF": 0, "XAF": 0, "UGX": 0, "RWF": 0, "BIF": 0, "GNF": 0, "KMF": 0, "DJF": 0,
}

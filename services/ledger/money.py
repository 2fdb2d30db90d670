"""Money and tax arithmetic for invoices: decimal strings in, decimal strings out.

Prices are tax-inclusive (what a shelf label shows). Per line: line_total = quantity x unit_price,
rounded half-up to the currency's minor unit. Per tax group: gross = sum of its line totals,
tax = gross x rate / (100 + rate) rounded half-up, taxable = gross - tax. An exempt group (no rate)
has no tax. Rounding per tax group (not per line) is what the receipt shows and the DGI expects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from services.runtime.faults import InvalidArgument

# ISO 4217 minor units of the currencies we expect to serve; anything else is refused rather than guessed.
MINOR_UNITS: dict[str, int] = {
    "KES": 2, "CDF": 2, "USD": 2, "EUR": 2, "NGN": 2, "GHS": 2, "ZAR": 2, "TZS": 2, "MAD": 2, "ETB": 2,
    "EGP": 2, "ZMW": 2, "MWK": 2, "MZN": 2, "AOA": 2, "BWP": 2, "NAD": 2, "SCR": 2, "MUR": 2, "SSP": 2,
    "SDG": 2, "LRD": 2, "SLE": 2, "GMD": 2, "CVE": 2, "STN": 2, "ERN": 2, "SZL": 2, "LSL": 2, "MGA": 2,
    "TND": 3, "LYD": 3,
    "XOF": 0, "XAF": 0, "UGX": 0, "RWF": 0, "BIF": 0, "GNF": 0, "KMF": 0, "DJF": 0,
}

_DECIMAL = re.compile(r"^\d{1,15}(\.\d{1,6})?$")
MAX_QUANTITY_DECIMALS = 3


def parse_decimal(value: str, field: str, *, max_decimals: int, allow_zero: bool) -> Decimal:
    if not isinstance(value, str) or not _DECIMAL.match(value.strip()):
        raise InvalidArgument(f"{field} must be a positive decimal string like \"12.50\", got {value!r}",
                              field=field)
    amount = Decimal(value.strip())
    exponent = -amount.as_tuple().exponent if amount.as_tuple().exponent < 0 else 0
    if exponent > max_decimals:
        raise InvalidArgument(f"{field} has more than {max_decimals} decimals: {value!r}", field=field)
    if amount == 0 and not allow_zero:
        raise InvalidArgument(f"{field} must be greater than zero", field=field)
    return amount


def parse_signed_positive(value: str, field: str, *, max_decimals: int, allow_zero: bool) -> Decimal:
    """Like parse_decimal, with a clear message for a negative amount."""
    if isinstance(value, str) and value.strip().startswith("-"):
        raise InvalidArgument(f"{field} must not be negative, got {value!r}", field=field)
    return parse_decimal(value, field, max_decimals=max_decimals, allow_zero=allow_zero)


def minor_units(currency: str) -> int:
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise InvalidArgument(f"unsupported currency {currency!r}", field="currency") from None


def quantize(amount: Decimal, decimals: int) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def fmt(amount: Decimal, decimals: int) -> str:
    return f"{quantize(amount, decimals):.{decimals}f}"


@dataclass(frozen=True)
class TaxGroup:
    code: str
    label: str
    rate: Decimal | None  # None: exempt

    @property
    def rate_text(self) -> str:
        return "" if self.rate is None else format(self.rate.normalize(), "f")


@dataclass(frozen=True)
class PricedLine:
    description: str
    quantity: Decimal
    unit_price: Decimal
    tax_group: str
    line_total: Decimal
    sku: str


@dataclass(frozen=True)
class GroupTotal:
    group: TaxGroup
    gross: Decimal
    tax: Decimal

    @property
    def taxable(self) -> Decimal:
        return self.gross - self.tax


@dataclass(frozen=True)
class Totals:
    groups: list[GroupTotal]
    gross: Decimal
    tax: Decimal

    @property
    def taxable(self) -> Decimal:
        return self.gross - self.tax


def price_line(description: str, quantity: Decimal, unit_price: Decimal, group: TaxGroup, sku: str,
               decimals: int) -> PricedLine:
    return PricedLine(description, quantity, unit_price, group.code, quantize(quantity * unit_price, decimals),
                      sku)


def compute_totals(lines: list[PricedLine], groups: dict[str, TaxGroup], decimals: int) -> Totals:
    by_group: dict[str, Decimal] = {}
    for line in lines:
        by_group[line.tax_group] = by_group.get(line.tax_group, Decimal(0)) + line.line_total
    group_totals = []
    for code in sorted(by_group):
        group, gross = groups[code], by_group[code]
        tax = Decimal(0) if group.rate is None else quantize(gross * group.rate / (100 + group.rate), decimals)
        group_totals.append(GroupTotal(group, gross, tax))
    return Totals(group_totals, sum((g.gross for g in group_totals), Decimal(0)),
                  sum((g.tax for g in group_totals), Decimal(0)))


def to_decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise InvalidArgument(f"not a decimal: {text!r}") from None

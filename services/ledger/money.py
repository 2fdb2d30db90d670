"""Money and tax arithmetic for invoices: decimal strings in, decimal strings out.

Prices are tax-inclusive (what a shelf label shows). Per line: line_total = quantity x unit_price,
rounded half-up to the currency's minor unit. Per tax group: gross = sum of its line totals,
tax = gross x rate / (100 + rate) rounded half-up, taxable = gross - tax. An exempt group (no rate)
has no tax. Rounding per tax group (not per line) is what the receipt shows and the DGI expects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal, Inexact, InvalidOperation, Overflow

from services.runtime.currencies import MINOR_UNITS  # shared with payments
from services.runtime.faults import InvalidArgument

# The limits (docs/api.md "Limits"). Amounts are in major units of the currency. The ledger stores
# totals as NUMERIC(20, 3) (< 10^17): every amount below MAX_AMOUNT fits with room to spare.
MAX_QUANTITY = Decimal(1_000_000)
MAX_QUANTITY_DECIMALS = 3
MAX_UNIT_PRICE = Decimal(10) ** 12
MAX_AMOUNT = Decimal(10) ** 15  # line totals, group totals, invoice totals and payments stay below it
MAX_AMOUNT_TEXT = 32  # characters of a decimal string; longer is refused before it is parsed

# Only ASCII digits: Python's \d and Decimal() also take "١٢" (Arabic-Indic twelve).
_DECIMAL = re.compile(r"[0-9]{1,17}(?:\.[0-9]{1,6})?", re.ASCII)


class AmountOutOfRange(InvalidArgument):
    """An amount the limits (or the arithmetic behind them) refuse."""


def shown(value: object, limit: int = 40) -> str:
    """A client's value quoted in a message, cut short: a message never echoes a megabyte back."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def money_context() -> Context:
    """A fresh context for one computation that never raises: no traps, enough precision for every
    bounded amount (17 + 6 digits times 7 + 3 digits), and flags that `checked` reads afterwards."""
    return Context(prec=50, rounding=ROUND_HALF_UP, Emax=99, Emin=-99, traps=[])


def checked(context: Context, what: str, field: str | None = None) -> None:
    """Refuse a result the context had to round or could not represent (it cannot with bounded inputs:
    this is the net under the bounds, so an overflow is a 400, never a 500)."""
    if context.flags[InvalidOperation] or context.flags[Overflow] or context.flags[Inexact]:
        raise AmountOutOfRange(f"{what} is out of range", field=field)


def parse_decimal(value: str, field: str, *, max_decimals: int, allow_zero: bool,
                  maximum: Decimal | None = None) -> Decimal:
    if not isinstance(value, str) or len(value) > MAX_AMOUNT_TEXT or not _DECIMAL.fullmatch(value):
        raise InvalidArgument(f"{field} must be a positive decimal string like \"12.50\", got {shown(value)}",
                              field=field)
    amount = Decimal(value)
    exponent = -amount.as_tuple().exponent if amount.as_tuple().exponent < 0 else 0
    if exponent > max_decimals:
        raise InvalidArgument(f"{field} has more than {max_decimals} decimals: {shown(value)}", field=field)
    if amount == 0 and not allow_zero:
        raise InvalidArgument(f"{field} must be greater than zero", field=field)
    if maximum is not None and amount > maximum:
        raise AmountOutOfRange(f"{field} must be at most {format(maximum, ',f')}", field=field)
    return amount


def parse_signed_positive(value: str, field: str, *, max_decimals: int, allow_zero: bool,
                          maximum: Decimal | None = None) -> Decimal:
    """Like parse_decimal, with a clear message for a negative amount."""
    if isinstance(value, str) and value.startswith("-"):
        raise InvalidArgument(f"{field} must not be negative, got {shown(value)}", field=field)
    return parse_decimal(value, field, max_decimals=max_decimals, allow_zero=allow_zero, maximum=maximum)


def minor_units(currency: str) -> int:
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise InvalidArgument(f"unsupported currency {shown(currency)}", field="currency") from None


def quantize(amount: Decimal, decimals: int) -> Decimal:
    context = money_context()
    result = context.quantize(amount, Decimal(1).scaleb(-decimals))
    if not result.is_finite():
        raise AmountOutOfRange("an amount is out of range")
    return result


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
               decimals: int, field: str | None = None) -> PricedLine:
    context = money_context()
    product = context.multiply(quantity, unit_price)
    checked(context, "line total", field)
    line_total = quantize(product, decimals)
    if line_total >= MAX_AMOUNT:
        raise AmountOutOfRange(f"line total (quantity x unit_price) must be below {format(MAX_AMOUNT, ',f')}",
                               field=field)
    return PricedLine(description, quantity, unit_price, group.code, line_total, sku)


def group_tax(gross: Decimal, group: TaxGroup, decimals: int) -> Decimal:
    """The tax inside a tax-inclusive gross amount of one group, rounded half-up."""
    if group.rate is None:
        return Decimal(0)
    context = money_context()
    share = context.divide(context.multiply(gross, group.rate), context.add(100, group.rate))
    if not share.is_finite():
        raise AmountOutOfRange("tax is out of range")
    return quantize(share, decimals)


def _sum(amounts, what: str) -> Decimal:
    context = money_context()
    total = Decimal(0)
    for amount in amounts:
        total = context.add(total, amount)
    checked(context, what)
    if total >= MAX_AMOUNT:
        raise AmountOutOfRange(f"{what} must be below {format(MAX_AMOUNT, ',f')}", field="lines")
    return total


def _gross_by_group(lines: list[PricedLine]) -> dict[str, Decimal]:
    by_group: dict[str, list[Decimal]] = {}
    for line in lines:
        by_group.setdefault(line.tax_group, []).append(line.line_total)
    return {code: _sum(amounts, "invoice total") for code, amounts in by_group.items()}


def compute_totals(lines: list[PricedLine], groups: dict[str, TaxGroup], decimals: int) -> Totals:
    by_group = _gross_by_group(lines)
    group_totals = [GroupTotal(groups[code], by_group[code], group_tax(by_group[code], groups[code], decimals))
                    for code in sorted(by_group)]
    return Totals(group_totals, _sum((g.gross for g in group_totals), "invoice total"),
                  _sum((g.tax for g in group_totals), "total tax"))


def compute_refund_totals(lines: list[PricedLine], groups: dict[str, TaxGroup], decimals: int,
                          refunded: dict[str, GroupTotal]) -> Totals:
    """Totals of a credit note, given what earlier credit notes of the same invoice refunded per group.

    Tax is rounded on the cumulative refund: this note's tax in a group is the tax of everything refunded
    so far minus the tax already refunded. So the refunded tax never runs ahead of the refunded gross by a
    rounding step, and refunding a whole group gives back exactly the tax the invoice charged."""
    by_group = _gross_by_group(lines)
    group_totals = []
    for code in sorted(by_group):
        group, gross = groups[code], by_group[code]
        earlier = refunded.get(code)
        earlier_gross, earlier_tax = (earlier.gross, earlier.tax) if earlier else (Decimal(0), Decimal(0))
        tax = max(group_tax(earlier_gross + gross, group, decimals) - earlier_tax, Decimal(0))
        group_totals.append(GroupTotal(group, gross, min(tax, gross)))
    return Totals(group_totals, _sum((g.gross for g in group_totals), "credit note total"),
                  _sum((g.tax for g in group_totals), "total tax"))

"""Money, limits and request bounds in-process: no database, no services."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.ledger.money import (
    MAX_AMOUNT,
    MAX_QUANTITY,
    MAX_UNIT_PRICE,
    GroupTotal,
    TaxGroup,
    compute_refund_totals,
    compute_totals,
    group_tax,
    parse_signed_positive,
    price_line,
)
from services.ledger.request_bounds import check_text, check_timestamp_text, require_identifier, require_uuid
from services.runtime.faults import InvalidArgument, NotFound

VAT16 = TaxGroup("A", "VAT 16%", Decimal("16"))
EXEMPT = TaxGroup("E", "Exempt", None)
GROUPS = {"A": VAT16, "E": EXEMPT}


def _quantity(text: str) -> Decimal:
    return parse_signed_positive(text, "quantity", max_decimals=3, allow_zero=False, maximum=MAX_QUANTITY)


def _price(text: str) -> Decimal:
    return parse_signed_positive(text, "unit_price", max_decimals=2, allow_zero=True, maximum=MAX_UNIT_PRICE)


@pytest.mark.parametrize("text", ["١٢", "１２", "12\n", " 12", "1e3", "NaN", "Infinity", "1_000", "+1", "0x10",
                                  "1" * 40, "", "1.", ".5"])
def test_only_plain_ascii_decimals_are_amounts(text):
    with pytest.raises(InvalidArgument):
        _quantity(text)


def test_quantity_and_price_have_upper_bounds():
    assert _quantity("1000000") == MAX_QUANTITY
    assert _price("1000000000000") == MAX_UNIT_PRICE
    for quantity in ("1000000.001", "5900000000000", "999999999999999"):
        with pytest.raises(InvalidArgument, match="at most 1,000,000"):
            _quantity(quantity)
    with pytest.raises(InvalidArgument, match="at most 1,000,000,000,000"):
        _price("999999999999999")


def test_a_line_total_at_the_limits_is_refused_not_raised():
    # Each factor is within its bound; the product (10^18) is not: a 400, never a decimal exception.
    with pytest.raises(InvalidArgument, match="line total"):
        price_line("x", MAX_QUANTITY, MAX_UNIT_PRICE, VAT16, "", 2)


def test_an_invoice_total_at_the_limit_is_refused():
    half = MAX_AMOUNT / 2
    lines = [price_line("x", Decimal(1), half, VAT16, "", 2), price_line("y", Decimal(1), half, EXEMPT, "", 2)]
    with pytest.raises(InvalidArgument, match="invoice total"):
        compute_totals(lines, GROUPS, 2)


def test_tax_is_rounded_per_group_half_up():
    lines = [price_line("x", Decimal("2"), Decimal("180.00"), VAT16, "", 2)]
    totals = compute_totals(lines, GROUPS, 2)
    assert (totals.gross, totals.tax) == (Decimal("360.00"), Decimal("49.66"))
    # 33.75 x 8 / 108 = 2.5 exactly: half-up gives 3 (half-even would give 2).
    assert group_tax(Decimal("33.75"), TaxGroup("B", "VAT 8%", Decimal(8)), 0) == 3
    assert group_tax(Decimal("100"), EXEMPT, 2) == 0


def test_refund_tax_is_rounded_on_the_cumulative_refund():
    # 100.00 at 16 % charged 13.79 of tax. Two refunds of 50.00: 6.90 then 6.89, never 13.80 in all.
    charged = group_tax(Decimal("100.00"), VAT16, 2)
    first = compute_refund_totals([price_line("x", Decimal(1), Decimal("50.00"), VAT16, "", 2)], GROUPS, 2, {})
    earlier = {"A": GroupTotal(VAT16, first.gross, first.tax)}
    second = compute_refund_totals([price_line("x", Decimal(1), Decimal("50.00"), VAT16, "", 2)], GROUPS, 2,
                                   earlier)
    assert (charged, first.tax, second.tax) == (Decimal("13.79"), Decimal("6.90"), Decimal("6.89"))
    assert first.tax + second.tax == charged


@pytest.mark.parametrize("value", ["T1\n", "T1 ", "١٢", "T" * 65, "a;b", "-T1"])
def test_identifiers_match_in_full_and_in_ascii(value):
    with pytest.raises(InvalidArgument):
        require_identifier(value, "pos_terminal_id")
    assert require_identifier("T1", "pos_terminal_id") == "T1"


def test_ids_are_canonical_uuids():
    good = "0193a0c4-7b5e-7f00-8000-000000000001"
    assert require_uuid(good.upper(), "id", "invoice") == good
    for bad in (good + "\n", "{" + good + "}", good.replace("-", ""), "٠" * 8 + good[8:]):
        with pytest.raises(NotFound):
            require_uuid(bad, "id", "invoice")


def test_text_allows_any_script_but_no_control_characters():
    assert check_text("Sukari 1kg — سكر ☕", "description", 200)
    for bad in ("a\nb", "a\x00b", "a\x1bb", "a\u2028b", "a\x85b"):
        with pytest.raises(InvalidArgument, match="control characters"):
            check_text(bad, "description", 200)
    with pytest.raises(InvalidArgument, match="longer than 200"):
        check_text("x" * 201, "description", 200)


def test_timestamps_are_rfc3339_in_ascii():
    assert check_timestamp_text("2026-11-24T10:00:00.123Z", "sold_at")
    for bad in ("2026-11-24", "2026-11-24T10:00:00", "٢٠٢٦-11-24T10:00:00Z", "2026-11-24T10:00:00Z\n",
                "2026-11-24 10:00:00+00:00"):
        with pytest.raises(InvalidArgument):
            check_timestamp_text(bad, "sold_at")

"""Reading what `fiscal export` packages: one outlet's invoices and credit notes sealed in a period, series by
series in chain (number) order, in pages, with the entry just before the period for the first link.

The period is whole days in the outlet's time zone. Within a series, numbers follow seal order, so the
period's documents are the numbers from the first to the last sealed in it; reading that number range
(not a time range) keeps the export gapless even if two seals of a batch straddle midnight.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ledger.export_package import Period
from services.ledger.model import InvoiceRecord, Outlet
from services.ledger.store import _INVOICE_COLUMNS, LedgerStore, _invoice, invoices
from services.runtime.faults import InvalidArgument

PAGE = 1000
MAX_PERIOD_DAYS = 3 * 366


def period_of(first_day: date, last_day: date, time_zone: str) -> Period:
    """Whole local days, first to last inclusive; InvalidArgument for a period that ends before it starts."""
    if last_day < first_day:
        raise InvalidArgument(f"the period ends ({last_day}) before it starts ({first_day})", field="to")
    if (last_day - first_day).days >= MAX_PERIOD_DAYS:
        raise InvalidArgument(f"a period covers at most {MAX_PERIOD_DAYS} days", field="to")
    zone = zoneinfo.ZoneInfo(time_zone)
    return Period(first_day, last_day, time_zone,
                  datetime.combine(first_day, time(0), zone),
                  datetime.combine(last_day + timedelta(days=1), time(0), zone))


class ExportReader:
    """The ledger's rows for one export, through its own database role."""

    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self.store = LedgerStore(engine)

    async def outlet(self, outlet_id: str) -> Outlet | None:
        return await self.store.outlet(outlet_id)

    async def number_ranges(self, outlet_id: str, period: Period) -> dict[str, tuple[int, int]]:
        """Per series: the first and last number sealed in the period (series with none are left out)."""
        query = (sa.select(invoices.c.series, sa.func.min(invoices.c.number), sa.func.max(invoices.c.number))
                 .where(invoices.c.outlet_id == outlet_id, invoices.c.sealed_at >= period.sealed_from,
                        invoices.c.sealed_at < period.sealed_before)
                 .group_by(invoices.c.series))
        async with self.engine.connect() as conn:
            return {row[0]: (row[1], row[2]) for row in (await conn.execute(query)).all()}

    async def entry(self, outlet_id: str, series: str, number: int) -> InvoiceRecord | None:
        query = sa.select(*_INVOICE_COLUMNS).where(invoices.c.outlet_id == outlet_id, invoices.c.series == series,
                                                   invoices.c.number == number)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _invoice(row) if row else None

    async def entries(self, outlet_id: str, series: str, first: int, last: int,
                      page: int = PAGE) -> AsyncIterator[InvoiceRecord]:
        """first..last in number order, `page` rows per query."""
        async for record in self.store.chain(outlet_id, series, after_number=first - 1, batch=page, last_number=last):
            yield record

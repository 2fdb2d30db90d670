"""The gRPC boundary in-process: a value the database refuses is a 400, and no log line carries a
request's or a query's parameters."""

from __future__ import annotations

import asyncio

import grpc
import psycopg
import pytest
from sqlalchemy import exc as sa_exc
from structlog.testing import capture_logs

from services.runtime.grpc_errors import handles_faults

SECRET_VALUE = "5900000000000-secret-parameter"


class _Context:
    """Just enough of grpc.aio.ServicerContext to see how a call ends."""

    code: grpc.StatusCode | None = None
    details = ""

    async def abort(self, code, details=""):
        self.code, self.details = code, details
        raise grpc.aio.AbortError()

    async def abort_with_status(self, status):
        self.code, self.details = status.code, status.details
        raise grpc.aio.AbortError()


class _Servicer:
    def __init__(self, error: Exception):
        self.error = error

    @handles_faults
    async def SealInvoice(self, request, context):
        raise self.error


def _call(error: Exception) -> tuple[_Context, list[dict]]:
    context = _Context()
    with capture_logs() as logs, pytest.raises(grpc.aio.AbortError):
        asyncio.run(_Servicer(error).SealInvoice(None, context))
    return context, logs


def _numeric_overflow() -> sa_exc.DataError:
    driver = psycopg.errors.NumericValueOutOfRange(
        "numeric field overflow\nDETAIL:  A field with precision 20, scale 3 must round to an absolute value "
        "less than 10^17.")
    return sa_exc.DataError("INSERT INTO ledger.invoices (total) VALUES (%(total)s)", {"total": SECRET_VALUE},
                            driver)


@pytest.mark.parametrize("error", [_numeric_overflow(), psycopg.errors.InvalidTextRepresentation(
    f'invalid input syntax for type uuid: "{SECRET_VALUE}"')], ids=["sqlalchemy", "psycopg"])
def test_a_value_the_database_refuses_is_invalid_argument_and_is_not_logged(error):
    context, logs = _call(error)
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert SECRET_VALUE not in context.details
    assert logs and SECRET_VALUE not in repr(logs)
    assert all("exc_info" not in entry for entry in logs)


def test_an_unexpected_error_is_logged_by_type_and_place_without_its_values():
    context, logs = _call(ValueError(f"cannot parse '{SECRET_VALUE}'\nsecond line {SECRET_VALUE}"))
    assert context.code == grpc.StatusCode.INTERNAL and context.details == "internal error"
    [entry] = logs
    assert entry["error"].startswith("ValueError: cannot parse")
    assert "SealInvoice" in entry["stack"]
    assert "exc_info" not in entry and SECRET_VALUE not in repr(entry)

"""gRPC face of the counter: requests in, domain calls, messages out."""

from __future__ import annotations

from datetime import timedelta

import grpc
from fiscal.v1 import counter_pb2, counter_pb2_grpc
from google.protobuf.duration_pb2 import Duration

from services.counter.domain import Counters
from services.runtime.grpc_errors import handles_faults
from services.runtime.timestamps import to_timestamp as _timestamp


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration


class CounterServicer(counter_pb2_grpc.CounterServiceServicer):
    def __init__(self, counters: Counters):
        self.counters = counters

    @handles_faults
    async def Allocate(self, request: counter_pb2.AllocateRequest, context: grpc.aio.ServicerContext):
        lease = await self.counters.allocate(request.outlet_id, request.series, request.holder,
                                             context.time_remaining(), request.count, request.commit_lease_id)
        return counter_pb2.Lease(lease_id=lease.lease_id, outlet_id=lease.outlet_id, series=lease.series,
                                 number=lease.number, expires_at=_timestamp(lease.expires_at),
                                 ttl=_duration(lease.ttl_seconds), last=lease.through)

    @handles_faults
    async def Commit(self, request: counter_pb2.CommitRequest, context: grpc.aio.ServicerContext):
        return counter_pb2.CommitResponse(last_committed=await self.counters.commit(request.lease_id))

    @handles_faults
    async def Release(self, request: counter_pb2.ReleaseRequest, context: grpc.aio.ServicerContext):
        await self.counters.release(request.lease_id, request.reason, request.resync_from_ledger)
        return counter_pb2.ReleaseResponse()

    @handles_faults
    async def GetCounter(self, request: counter_pb2.GetCounterRequest, context: grpc.aio.ServicerContext):
        state = await self.counters.state(request.outlet_id, request.series)
        return counter_pb2.CounterState(
            outlet_id=state.outlet_id, series=state.series, last_committed=state.last_committed,
            open_lease_id=state.open_lease_id or "", open_lease_number=state.open_lease_number or 0,
            open_lease_expires_at=_timestamp(state.open_lease_expires_at),
            open_lease_last=state.open_lease_last or state.open_lease_number or 0)

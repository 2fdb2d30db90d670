"""The gRPC face of the signing service: translation only, the work is in keys.KeyManager."""

from __future__ import annotations

from fiscal.v1 import signing_pb2, signing_pb2_grpc

from services.runtime.grpc_errors import handles_faults
from services.runtime.timestamps import to_timestamp as _timestamp
from services.signing.keys import ALGORITHM, CURVE, KeyManager, KeyRecord


def public_key_message(key: KeyRecord) -> signing_pb2.PublicKey:
    return signing_pb2.PublicKey(
        kid=key.kid, kty="EC", crv=CURVE, x=key.x, y=key.y, alg=ALGORITHM, use="sig", status=key.status,
        created_at=_timestamp(key.created_at), retired_at=_timestamp(key.retired_at), backend=key.backend,
    )


class SigningServicer(signing_pb2_grpc.SigningServiceServicer):
    def __init__(self, manager: KeyManager):
        self.manager = manager

    @handles_faults
    async def Sign(self, request, context):
        signature, key = await self.manager.sign(request.digest)
        return signing_pb2.SignResponse(signature=signature, key_id=key.kid, algorithm=ALGORITHM)

    @handles_faults
    async def ListPublicKeys(self, request, context):
        return signing_pb2.ListPublicKeysResponse(
            keys=[public_key_message(key) for key in await self.manager.keys()])

    @handles_faults
    async def RotateKey(self, request, context):
        return public_key_message(await self.manager.rotate())

    @handles_faults
    async def GetHsmStatus(self, request, context):
        health = await self.manager.health()
        return signing_pb2.HsmStatus(
            backend=health.backend, module_loaded=health.module_loaded, token_present=health.token_present,
            logged_in=health.logged_in, test_signature_ok=health.test_signature_ok,
            active_key_id=health.active_key_id, detail=health.detail, checked_at=_timestamp(health.checked_at),
        )

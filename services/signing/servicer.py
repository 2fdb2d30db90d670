"""The gRPC face of the signing service: translation only, the work is in keys.KeyManager."""

from __future__ import annotations

import asyncio

import structlog
from fiscal.v1 import signing_pb2, signing_pb2_grpc

from services.runtime.grpc_errors import handles_faults
from services.runtime.mesh_tls import peer_identity
from services.runtime.timestamps import to_timestamp as _timestamp
from services.signing.keys import ALGORITHM, CURVE, KeyManager, KeyRecord
from services.signing.statement import (
    StatementRules,
    checked_export_statement_digest,
    checked_statement_digest,
    checked_statement_digests,
)

log = structlog.get_logger()


def public_key_message(key: KeyRecord) -> signing_pb2.PublicKey:
    return signing_pb2.PublicKey(
        kid=key.kid, kty="EC", crv=CURVE, x=key.x, y=key.y, alg=ALGORITHM, use="sig", status=key.status,
        created_at=_timestamp(key.created_at), retired_at=_timestamp(key.retired_at), backend=key.backend,
        compromised_at=_timestamp(key.compromised_at), compromise_reason=key.compromise_reason or "",
    )


class SigningServicer(signing_pb2_grpc.SigningServiceServicer):
    def __init__(self, manager: KeyManager, statement_rules: StatementRules):
        self.manager = manager
        self.statement_rules = statement_rules

    @handles_faults
    async def Sign(self, request, context):
        # The ledger signs receipts; the operator signs audit packages (`fiscal export`), never a receipt.
        if peer_identity(context) == "operator":
            digest = checked_export_statement_digest(request.statement, self.statement_rules)
        else:
            digest = checked_statement_digest(request.statement, self.statement_rules)
        signature, key = await self.manager.sign(digest)
        return signing_pb2.SignResponse(signature=signature, key_id=key.kid, algorithm=ALGORITHM)

    @handles_faults
    async def SignBatch(self, request, context):
        digests = checked_statement_digests(list(request.statements), self.statement_rules)
        # Concurrently: the PKCS#11 backend signs what is waiting in one hop to its thread.
        signed = await asyncio.gather(*(self.manager.sign(digest) for digest in digests))
        return signing_pb2.SignBatchResponse(signatures=[
            signing_pb2.SignResponse(signature=signature, key_id=key.kid, algorithm=ALGORITHM)
            for signature, key in signed])

    @handles_faults
    async def ListPublicKeys(self, request, context):
        keys = await self.manager.keys()
        # Rare by design (the ledger caches the set): logged so that a flood would show.
        log.info("public keys listed", count=len(keys))
        return signing_pb2.ListPublicKeysResponse(keys=[public_key_message(key) for key in keys])

    @handles_faults
    async def RotateKey(self, request, context):
        return public_key_message(await self.manager.rotate())

    @handles_faults
    async def CompromiseKey(self, request, context):
        return public_key_message(await self.manager.compromise(request.kid, request.reason))

    @handles_faults
    async def GetHsmStatus(self, request, context):
        health = await self.manager.health()
        return signing_pb2.HsmStatus(
            backend=health.backend, module_loaded=health.module_loaded, token_present=health.token_present,
            logged_in=health.logged_in, test_signature_ok=health.test_signature_ok,
            active_key_id=health.active_key_id, detail=health.detail, checked_at=_timestamp(health.checked_at),
        )

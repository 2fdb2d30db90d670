"""Where private keys live and how they sign: a software keystore (development) or a PKCS#11 HSM.

Both return raw r||s (the JWS ES256 form), always with a low s (s <= n/2). The HSM is driven through python-pkcs11, which is
synchronous: its calls run on a small dedicated thread pool, each thread borrowing one of a few
long-lived sessions (the PKCS#11 library releases the GIL while it signs).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.runtime.es256 import coordinates, coordinates_from_point, low_s, sign_digest, verify_raw
from services.runtime.faults import Unavailable
from services.runtime.telemetry import tracer
from services.signing.keys import ConfigurationError, GeneratedKey, HsmHealth, KeyRecord, random_digest

log = structlog.get_logger()

class SoftwareBackend:
    """Keys generated with `cryptography`, stored in the database as PEM encrypted with a passphrase."""

    name = "software"

    def __init__(self, passphrase: str):
        if not passphrase:
            raise ConfigurationError("FISCAL_SOFT_KEYSTORE_PASSPHRASE is required with the software backend")
        self._passphrase = passphrase.encode("utf-8")
        self._loaded: dict[str, ec.EllipticCurvePrivateKey] = {}

    async def start(self) -> None:
        return None

    async def generate(self) -> GeneratedKey:
        private_key = ec.generate_private_key(ec.SECP256R1())
        pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase),
        )
        x, y = coordinates(private_key.public_key())
        key = GeneratedKey(x=x, y=y, private_pem=pem)
        self._loaded[key.kid] = private_key
        return key

    def _private_key(self, key: KeyRecord) -> ec.EllipticCurvePrivateKey:
        private_key = self._loaded.get(key.kid)
        if private_key is None:
            if key.private_pem is None:
                raise Unavailable(f"key {key.kid} has no software private key")
            try:
                loaded = serialization.load_pem_private_key(key.private_pem, password=self._passphrase)
            except (ValueError, TypeError):
                raise Unavailable(f"cannot decrypt key {key.kid}: wrong keystore passphrase?") from None
            if not isinstance(loaded, ec.EllipticCurvePrivateKey) or coordinates(loaded.public_key()) != (key.x, key.y):
                raise Unavailable(f"key {key.kid}: the stored private key does not match its public key")
            self._loaded[key.kid] = private_key = loaded
        return private_key

    async def sign(self, key: KeyRecord, digest: bytes) -> bytes:
        with tracer.start_as_current_span("hsm.sign", attributes={"backend": self.name, "key_id": key.kid}):
            # ~30 µs: cheaper inline than a hop to a thread. Always low-S (see es256.low_s).
            return sign_digest(self._private_key(key), digest)

    async def check(self, key: KeyRecord | None) -> HsmHealth:
        health = HsmHealth(backend=self.name, module_loaded=True, token_present=True)
        if key is None:
            health.detail = "no active key"
            return health
        try:
            self._private_key(key)
            health.logged_in = True
            digest = random_digest()
            health.test_signature_ok = verify_raw(key.x, key.y, digest, await self.sign(key, digest))
            if not health.test_signature_ok:
                health.detail = "test signature does not verify"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            health.detail = str(exc) or type(exc).__name__
        return health

    async def close(self) -> None:
        self._loaded.clear()


class Pkcs11Backend:
    """EC P-256 keys generated inside the token; the private key never leaves it (CKA_SENSITIVE,
    not extractable). Signs with CKM_ECDSA over the SHA-256 digest (SoftHSM2 refuses CKM_ECDSA_SHA256).

    python-pkcs11 calls C_Initialize without CKF_OS_LOCKING_OK, which tells the module the application
    will not call it from several threads at once (SoftHSM2 does crash if it does). So every call runs
    on ONE dedicated thread, through ONE long-lived logged-in session; signatures that arrive while the
    thread is busy are signed in a batch, answered with one hop back to the event loop.
    """

    name = "pkcs11"

    def __init__(self, module: str, token_label: str, pin: str, max_batch: int = 256):
        if not pin:
            raise ConfigurationError("FISCAL_PKCS11_PIN is required with the pkcs11 backend")
        self.module = module
        self.token_label = token_label
        self._pin = pin
        self._max_batch = max_batch
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="pkcs11")
        self._lib = None
        self._session = None
        self._keys: dict[str, object] = {}  # hsm_label -> private key object of the current session
        self._pending: list[tuple[str, bytes, asyncio.Future]] = []
        self._draining = False

    # -- connection (on the PKCS#11 thread) --

    def _connect(self) -> None:
        import pkcs11
        from pkcs11 import exceptions as p11

        if not os.path.exists(self.module):
            raise ConfigurationError(f"PKCS#11 module {self.module} not found (FISCAL_PKCS11_MODULE)")
        try:
            lib = pkcs11.lib(self.module)
            if not lib.initialized:
                lib.initialize()
        except Exception as exc:  # noqa: BLE001
            raise ConfigurationError(
                f"cannot load PKCS#11 module {self.module}: {type(exc).__name__} {exc}".rstrip()) from None
        self._lib = lib
        try:
            token = lib.get_token(token_label=self.token_label)
        except p11.NoSuchToken:
            raise ConfigurationError(
                f"PKCS#11 token {self.token_label!r} not found in {self.module} (FISCAL_PKCS11_TOKEN_LABEL)"
            ) from None
        except p11.MultipleTokensReturned:
            raise ConfigurationError(f"several PKCS#11 tokens are labelled {self.token_label!r}") from None
        try:
            self._session = token.open(rw=True, user_pin=self._pin)
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
            raise ConfigurationError(
                f"PKCS#11 login to token {self.token_label!r} failed: PIN incorrect (FISCAL_PKCS11_PIN)") from None
        except p11.PinLocked:
            raise ConfigurationError(f"PKCS#11 token {self.token_label!r}: the user PIN is locked") from None
        self._keys = {}

    def _disconnect(self) -> None:
        session, self._session, self._keys = self._session, None, {}
        if session is not None:
            try:
                session.close()
            except Exception:  # noqa: BLE001, S110 - the token may be gone already
                pass

    def _reconnect(self) -> None:
        self._disconnect()
        if self._lib is not None and self._lib.initialized:
            try:
                self._lib.reinitialize()  # C_Finalize + C_Initialize: the module re-reads its tokens
            except Exception:  # noqa: BLE001
                try:
                    self._lib.finalize()
                except Exception:  # noqa: BLE001, S110
                    pass
        self._connect()

    def _private_key(self, label: str):
        from pkcs11 import ObjectClass

        if self._session is None:
            raise Unavailable(f"HSM token {self.token_label!r} is not connected", reason="HSM_UNAVAILABLE")
        key = self._keys.get(label)
        if key is None:
            key = self._session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
            self._keys[label] = key
        return key

    # -- work (on the PKCS#11 thread) --

    def _sign_batch(self, batch: list[tuple[str, bytes, asyncio.Future]], loop: asyncio.AbstractEventLoop) -> None:
        from pkcs11 import Mechanism, PKCS11Error

        results = []
        for label, digest, future in batch:
            try:
                # The token returns whichever s it drew; publish only the low-S form (one valid QR per receipt).
                signature = low_s(self._private_key(label).sign(digest, mechanism=Mechanism.ECDSA))
                results.append((future, signature, None))
            except Unavailable as exc:
                results.append((future, None, exc))
            except PKCS11Error as exc:
                results.append((future, None, Unavailable(f"HSM signature failed: {type(exc).__name__}",
                                                           reason="HSM_ERROR")))
            except Exception as exc:  # noqa: BLE001 - handed to the caller
                results.append((future, None, exc))
        loop.call_soon_threadsafe(_resolve, results)

    def _generate_sync(self) -> GeneratedKey:
        from pkcs11 import Attribute, KeyType
        from pkcs11.util.ec import encode_named_curve_parameters

        if self._session is None:
            raise Unavailable(f"HSM token {self.token_label!r} is not connected", reason="HSM_UNAVAILABLE")
        label = f"fiscal-es256-{uuid.uuid4().hex[:16]}"
        key_id = os.urandom(16)
        params = self._session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True)
        public, _ = params.generate_keypair(
            store=True, label=label, id=key_id,
            private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )
        x, y = coordinates_from_point(_unwrap_point(public[Attribute.EC_POINT]))
        return GeneratedKey(x=x, y=y, hsm_label=label, hsm_id=key_id.hex())

    def _check_sync(self, key: KeyRecord | None, retry: bool = True) -> HsmHealth:
        from pkcs11 import Mechanism

        health = HsmHealth(backend=self.name)
        try:
            if self._session is None:
                self._reconnect()
            health.module_loaded = self._lib is not None and self._lib.initialized
            try:
                health.token_present = any(True for _ in self._lib.get_tokens(token_label=self.token_label))
            except Exception as exc:  # noqa: BLE001
                raise Unavailable(f"listing tokens failed: {type(exc).__name__}") from None
            if not health.token_present:
                raise Unavailable(f"token {self.token_label!r} not present")
            if key is None:
                health.logged_in = self._session is not None
                health.detail = "no active key"
                return health
            try:
                # The private key is a private object: only a logged-in application finds it.
                private_key = self._private_key(key.hsm_label or "")
            except Exception as exc:  # noqa: BLE001
                raise Unavailable(f"key {key.hsm_label!r} not found in the token (not logged in?): "
                                  f"{type(exc).__name__}") from None
            health.logged_in = True
            digest = random_digest()
            try:
                signature = low_s(private_key.sign(digest, mechanism=Mechanism.ECDSA))
            except Exception as exc:  # noqa: BLE001
                raise Unavailable(f"test signature failed: {type(exc).__name__}") from None
            health.test_signature_ok = verify_raw(key.x, key.y, digest, signature)
            if not health.test_signature_ok:
                health.detail = "test signature does not verify with the published public key"
        except Exception as exc:  # noqa: BLE001 - a failed check is a status, not an error
            known = isinstance(exc, (Unavailable, ConfigurationError))
            health.detail = str(exc) if known else f"{type(exc).__name__}: {exc}".rstrip(": ")
            health.module_loaded = self._lib is not None and self._lib.initialized
        if not health.ok and retry and key is not None:
            # The session or object handles may be stale (token re-inserted, module restarted): start over once.
            log.warning("hsm check failed, reconnecting", detail=health.detail)
            try:
                self._reconnect()
            except Exception as exc:  # noqa: BLE001
                health.detail += f"; reconnect failed: {exc}"
                return health
            return self._check_sync(key, retry=False)
        return health

    # -- the async face --

    async def _run(self, fn, *args):
        """Run on the PKCS#11 thread, carrying the log context (service name) along."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._executor, context.run, fn, *args)

    async def start(self) -> None:
        await self._run(self._connect)
        log.info("pkcs11 token open", module=self.module, token_label=self.token_label)

    async def generate(self) -> GeneratedKey:
        return await self._run(self._generate_sync)

    async def sign(self, key: KeyRecord, digest: bytes) -> bytes:
        with tracer.start_as_current_span("hsm.sign", attributes={"backend": self.name, "key_id": key.kid}):
            if key.hsm_label is None:
                raise Unavailable(f"key {key.kid} has no HSM reference")
            future = asyncio.get_running_loop().create_future()
            self._pending.append((key.hsm_label, digest, future))
            if not self._draining:
                self._draining = True
                asyncio.get_running_loop().create_task(self._drain())
            return await future

    async def _drain(self) -> None:
        """Hand waiting signatures to the PKCS#11 thread in batches until none is left."""
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
                try:
                    await loop.run_in_executor(self._executor, self._sign_batch, batch, loop)
                except Exception as exc:  # noqa: BLE001 - e.g. the executor is shut down
                    _resolve([(future, None, exc) for _, _, future in batch])
                await asyncio.sleep(0)  # let the batch's callers run and new requests queue up
        finally:
            self._draining = False

    async def check(self, key: KeyRecord | None) -> HsmHealth:
        return await self._run(self._check_sync, key)

    async def close(self) -> None:
        await self._run(self._disconnect)
        self._executor.shutdown(wait=False)


def _resolve(results) -> None:
    for future, value, error in results:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def _unwrap_point(ec_point: bytes) -> bytes:
    """CKA_EC_POINT is the SEC1 point wrapped in a DER OCTET STRING (some modules omit the wrapper)."""
    if len(ec_point) == 67 and ec_point[:2] == b"\x04\x41":
        return ec_point[2:]
    return ec_point

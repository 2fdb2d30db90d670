"""A development certificate authority for the mesh, and one certificate per identity, kept in
<data-dir>/mesh-tls/ (directory 0700, keys 0600, private from creation). Made by `fiscal up` and the
test Mesh; production mounts its own certificates (FISCAL_TLS_CERT / _KEY / _CA, services/runtime/mesh_tls.py).

Certificates last 90 days and are made again when missing, expiring within a week, or not signed by
the current CA.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.runtime.channels import grpc_target
from services.runtime.mesh_tls import TlsMaterial, server_name_options, spiffe_id
from services.runtime.private_files import private_dir, write_private

IDENTITIES = ("counter", "signing", "ledger", "webhooks", "payments", "gateway", "operator")
VALIDITY = dt.timedelta(days=90)
RENEW_BEFORE = dt.timedelta(days=7)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _usable(cert_path: Path, ca: x509.Certificate | None) -> bool:
    if not cert_path.exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.not_valid_after_utc - RENEW_BEFORE < dt.datetime.now(dt.UTC):
        return False
    if ca is not None:
        try:
            cert.verify_directly_issued_by(ca)
        except Exception:  # noqa: BLE001 - any failure (wrong issuer, bad signature) means "issue again"
            return False
    return True


class MeshCertificates:
    """The CA and identity certificates in one directory."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.pem"

    def cert_path(self, identity: str) -> Path:
        return self.directory / f"{identity}.pem"

    def key_path(self, identity: str) -> Path:
        return self.directory / f"{identity}.key"

    def ensure(self, identities: tuple[str, ...] = IDENTITIES) -> MeshCertificates:
        private_dir(self.directory)
        ca_cert, ca_key = self._ensure_ca()
        for identity in identities:
            if not (_usable(self.cert_path(identity), ca_cert) and self.key_path(identity).exists()):
                self._issue(identity, ca_cert, ca_key)
        return self

    def _ensure_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        ca_key_path = self.directory / "ca.key"
        if _usable(self.ca_path, None) and ca_key_path.exists():
            key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
            return x509.load_pem_x509_certificate(self.ca_path.read_bytes()), key
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fiscal Cloud development mesh CA")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        write_private(ca_key_path, _key_pem(key))
        write_private(self.ca_path, cert.public_bytes(serialization.Encoding.PEM))
        return cert, key

    def _issue(self, identity: str, ca_cert: x509.Certificate, ca_key) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName([
                    x509.UniformResourceIdentifier(spiffe_id(identity)), x509.DNSName(identity)]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        write_private(self.key_path(identity), _key_pem(key))
        write_private(self.cert_path(identity), cert.public_bytes(serialization.Encoding.PEM))

    def env(self, identity: str) -> dict[str, str]:
        """The FISCAL_TLS_* variables of a process running as `identity`."""
        return {"FISCAL_TLS_CERT": str(self.cert_path(identity)), "FISCAL_TLS_KEY": str(self.key_path(identity)),
                "FISCAL_TLS_CA": str(self.ca_path)}

    def material(self, identity: str) -> TlsMaterial:
        return TlsMaterial.from_files(self.cert_path(identity), self.key_path(identity), self.ca_path)

    def channel(self, address: str, identity: str, service: str) -> grpc.Channel:
        """A blocking mTLS channel to `service` at `address`, presenting `identity`'s certificate."""
        return grpc.secure_channel(grpc_target(address), self.material(identity).channel_credentials(),
                                   options=server_name_options(service))

    def aio_channel(self, address: str, identity: str, service: str) -> grpc.aio.Channel:
        """An asyncio mTLS channel to `service` at `address`, presenting `identity`'s certificate."""
        return grpc.aio.secure_channel(grpc_target(address), self.material(identity).channel_credentials(),
                                       options=server_name_options(service))

"""TLS with mutual authentication for a Dask cluster that spans machines.

A private certificate authority signs one certificate for each role Dask knows (``scheduler``,
``worker``, ``client``: Airflow's tasks are clients). Dask's ``distributed.security.Security``
reads them from its configuration, so every process of a role gets the same few environment
variables (``role_env``) and nothing else changes: ``tls://`` addresses, and with
``require-encryption`` a plaintext peer is refused. Dask checks that a peer's certificate is
signed by the authority, not its host name, so one certificate serves a role on every host.

The same authority signs the object store's certificate (``object-store``, MinIO's in
docker-compose), so that workers on other machines reach the lake over TLS trusting one file.

``nightshift dask-certs DIR --host NAME`` writes them (``make_certificates``); the authority's
private key stays in DIR and signs nothing else: keep it off the machines.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Role = Literal["scheduler", "worker", "client"]
ROLES: tuple[Role, ...] = ("scheduler", "worker", "client")
# Servers outside Dask that the cluster's processes reach over TLS, trusting the same authority.
Server = Literal["object-store"]
SERVERS: tuple[Server, ...] = ("object-store",)
CA, CA_KEY = "ca.pem", "ca-key.pem"
# Dask's configuration keys, as environment variables (its Security reads them).
REQUIRE_ENCRYPTION = "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"
CA_FILE = "DASK_DISTRIBUTED__COMM__TLS__CA_FILE"


def pair_settings(role: Role) -> tuple[str, str]:
    """Return the settings naming ``role``'s certificate and its key."""
    prefix = f"DASK_DISTRIBUTED__COMM__TLS__{role.upper()}"
    return f"{prefix}__CERT", f"{prefix}__KEY"


@dataclass(frozen=True)
class TlsFiles:
    """Where a cluster's certificates are, as one machine mounts them (``folder``)."""

    folder: Path

    @property
    def ca(self) -> Path:
        """The authority's certificate, which every process trusts."""
        return self.folder / CA

    def cert(self, role: Role | Server) -> Path:
        """The certificate of ``role``."""
        return self.folder / f"{role}.pem"

    def key(self, role: Role | Server) -> Path:
        """The private key of ``role``."""
        return self.folder / f"{role}-key.pem"

    def written(self) -> list[Path]:
        """Every file ``make_certificates`` writes."""
        return [self.ca, self.folder / CA_KEY] + [
            path for role in (*ROLES, *SERVERS) for path in (self.cert(role), self.key(role))
        ]


def role_env(files: TlsFiles, *roles: Role) -> dict[str, str]:
    """Return the Dask settings (environment variables) of a process acting as ``roles``:
    the authority, each role's certificate and key, and encryption required."""
    env = {REQUIRE_ENCRYPTION: "True", CA_FILE: str(files.ca)}
    for role in roles:
        cert, key = pair_settings(role)
        env[cert], env[key] = str(files.cert(role)), str(files.key(role))
    return env


def make_certificates(folder: Path, hosts: Sequence[str], days: int = 825) -> TlsFiles:
    """Write a new authority and a certificate for each role and server, valid ``days``, naming
    ``hosts`` (DNS names or IP addresses) as alternative names. Refuses to replace any file
    already there: a cluster's certificates are replaced on purpose, not by a second run."""
    files = TlsFiles(folder)
    there = [path.name for path in files.written() if path.exists()]
    if there:
        raise FileExistsError(
            f"{folder} already holds {', '.join(there)}: move them away to make new ones "
            "(every machine of the cluster then needs the new files)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    authority, authority_key = _authority(days)
    _write(folder / CA, _pem(authority), private=False)
    _write(folder / CA_KEY, _key_pem(authority_key), private=True)
    for role in (*ROLES, *SERVERS):
        certificate, key = _signed(role, hosts, authority, authority_key, days)
        _write(files.cert(role), _pem(certificate), private=False)
        _write(files.key(role), _key_pem(key), private=True)
    return files


def _name(common: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nightshift Dask cluster"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _validity(builder: Any, days: int) -> Any:
    now = dt.datetime.now(dt.UTC)
    return builder.not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(
        now + dt.timedelta(days=days)
    )


def _authority(days: int) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("nightshift Dask certificate authority")
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(authority=True), critical=True)
    )
    return _validity(builder, days).sign(key, hashes.SHA256()), key


def _usage(authority: bool) -> Any:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not authority,
        key_cert_sign=authority,
        crl_sign=authority,
        encipher_only=False,
        decipher_only=False,
    )


def _signed(
    role: Role | Server, hosts: Sequence[str], authority: Any, authority_key: Any, days: int
) -> tuple[Any, Any]:
    """Return a certificate for ``role`` signed by the authority, and its key. Every role
    both listens and connects (a worker serves the scheduler and its peers), so each may
    authenticate as server and as client."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = ec.generate_private_key(ec.SECP256R1())
    purposes = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(role if role in SERVERS else f"dask {role}"))
        .issuer_name(authority.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(authority=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
        .add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
    )
    return _validity(builder, days).sign(authority_key, hashes.SHA256()), key


def _alt_names(hosts: Sequence[str]) -> list[Any]:
    from cryptography import x509

    names: list[Any] = []
    for host in dict.fromkeys([*hosts, "localhost"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _pem(certificate: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _write(path: Path, data: bytes, private: bool) -> None:
    """Write ``path`` whole or not at all; a key readable by its owner only."""
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(
        partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644
    )
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)

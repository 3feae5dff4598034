"""The Dask cluster's certificates: signed by their own authority, keys private, never
overwritten, and the settings each role needs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509

from nightshift.ops.dask_tls import ROLES, SERVERS, make_certificates, role_env


def test_each_role_has_a_certificate_its_authority_signed(tmp_path: Path) -> None:
    # Dask's roles, and the object store the workers reach over TLS with the same authority.
    files = make_certificates(tmp_path / "certs", ["dask.example.org", "10.0.0.5"], days=30)
    authority = x509.load_pem_x509_certificate(files.ca.read_bytes())
    for role in (*ROLES, *SERVERS):
        certificate = x509.load_pem_x509_certificate(files.cert(role).read_bytes())
        certificate.verify_directly_issued_by(authority)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == ["dask.example.org", "localhost"]
        assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
        assert stat.S_IMODE(files.key(role).stat().st_mode) == 0o600
    assert stat.S_IMODE((files.folder / "ca-key.pem").stat().st_mode) == 0o600


def test_certificates_already_there_are_never_replaced(tmp_path: Path) -> None:
    files = make_certificates(tmp_path, ["dask"])
    before = {path: path.read_bytes() for path in files.written()}
    held = r"already holds ca\.pem, ca-key\.pem, scheduler\.pem"
    with pytest.raises(FileExistsError, match=held):
        make_certificates(tmp_path, ["dask"])
    assert {path: path.read_bytes() for path in files.written()} == before


def test_a_role_gets_the_authority_its_own_pair_and_encryption_required(tmp_path: Path) -> None:
    files = make_certificates(tmp_path, ["dask"])
    assert role_env(files, "worker") == {
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(tmp_path / "ca.pem"),
        "DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT": str(tmp_path / "worker.pem"),
        "DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY": str(tmp_path / "worker-key.pem"),
    }

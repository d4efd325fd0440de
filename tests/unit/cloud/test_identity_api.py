"""The device-identity routes: admin only; a bundle with the key once; a CSR route; revocation.

SQLite in a temp folder (the unit fixtures), the app in a TestClient; certificates are real.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.context import HubContext
from cloud.identity.tables import IssuedCert
from cloud.models import Role
from cloud.services import tokens


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


def _headers(ctx: HubContext, role: Role) -> dict[str, str]:
    with ctx.sessions() as s:
        return {"Authorization": f"Bearer {tokens.create_token(s, role.value, role)[1]}"}


def test_an_admin_gets_a_bundle_with_the_key_once(client: TestClient, ctx: HubContext) -> None:
    r = client.post("/api/v1/devices/cam-1/credentials", headers=_headers(ctx, Role.ADMIN))
    assert r.status_code == 201, r.text
    body = r.json()
    cert = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
    ca = x509.load_pem_x509_certificate(body["ca_certificate_pem"].encode())
    cert.verify_directly_issued_by(ca)
    assert format(cert.serial_number, "x") == body["serial"]
    assert "PRIVATE KEY" in body["private_key_pem"]
    assert body["root_json"] is None  # this hub has no update repository
    config = tomllib.loads(body["agent_config_toml"])
    assert config["device_id"] == "cam-1" and config["mqtt"]["tls"] and config["hub"]["grpc_tls"]
    with ctx.sessions() as s:
        row = s.get(IssuedCert, body["serial"])
        assert row is not None and row.subject == "cam-1"
        # The key is returned, never kept: nothing in the row holds it.
        assert "PRIVATE" not in str(row.model_dump())


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
def test_only_an_admin_may_issue_or_revoke(client: TestClient, ctx: HubContext, role: Role) -> None:
    headers = _headers(ctx, role)
    for path in ("/api/v1/devices/cam-1/credentials", "/api/v1/devices/cam-1/credentials/revoke"):
        assert client.post(path, headers=headers).status_code == 403
    assert client.post("/api/v1/devices/cam-1/credentials").status_code == 401


def test_a_csr_gets_a_certificate_and_no_key(client: TestClient, ctx: HubContext) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    headers = _headers(ctx, Role.ADMIN)
    r = client.post(
        "/api/v1/devices/cam-2/csr",
        json={"csr_pem": csr.public_bytes(Encoding.PEM).decode()},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["private_key_pem"] is None
    cert = x509.load_pem_x509_certificate(r.json()["certificate_pem"].encode())
    assert cert.public_key() == key.public_key()
    bad = client.post("/api/v1/devices/cam-2/csr", json={"csr_pem": "nonsense"}, headers=headers)
    assert bad.status_code == 422 and "expected a PEM certificate signing request" in bad.json()["detail"]
    extra = client.post("/api/v1/devices/cam-2/csr", json={"csr_pem": "x", "cn": "hub"}, headers=headers)
    assert extra.status_code == 422


def test_revocation_lists_the_serials_and_says_where_it_stands(client: TestClient, ctx: HubContext) -> None:
    headers = _headers(ctx, Role.ADMIN)
    serial = client.post("/api/v1/devices/cam-3/credentials", headers=headers).json()["serial"]
    r = client.post("/api/v1/devices/cam-3/credentials/revoke", headers=headers)
    assert r.status_code == 200 and r.json() == {
        "device_id": "cam-3",
        "revoked": [serial],
        "crl_updated": True,
    }
    again = client.post("/api/v1/devices/cam-3/credentials/revoke", headers=headers)
    assert again.json()["revoked"] == []
    missing = client.post("/api/v1/devices/cam-9/credentials/revoke", headers=headers)
    assert missing.status_code == 404
    assert str(ctx.settings.data_dir) not in missing.text  # no server path in an answer
    bad_id = client.post("/api/v1/devices/a+b/credentials", headers=headers)
    assert bad_id.status_code == 422 and "invalid device id" in bad_id.json()["detail"]

"""Bundles on the hub, on SQLite and the real PostgreSQL: atomic registration, variants per device,
experiments with lineage, the HTTP API and the artifacts the gRPC service may serve."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from cloud.api.app import create_app
from cloud.artifacts import ArtifactStore
from cloud.context import HubContext
from cloud.db import SessionFactory
from cloud.errors import ConflictError, InvalidArtifactError, InvalidInputError
from cloud.models import Bundle, DesiredState, Experiment, ModelVariant, ModelVersion, Role
from cloud.services import assignments, bundles, experiments, registry, tokens
from cloud.services.devices import list_devices
from cloud.services.ingest import InboundMessage, Ingestor
from cloud.services.publisher import RecordingPublisher
from cloud.services.variants import NoCompatibleVariantError
from cloud.settings import Settings
from edgefleet_proto.topics import FleetTopics
from edgefleet_proto.v1 import desired_pb2, device_pb2
from model_tools.bundle import MANIFEST_NAME
from model_tools.pipeline import PipelineResult
from tests.unit.cloud.helpers import FrozenClock, status

pytestmark = pytest.mark.integration

FLEET = "unit"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, fleet=FLEET, max_upload_bytes=1024 * 1024)


def _objects(store: ArtifactStore) -> set[str]:
    return {p.name for p in (store.root / "sha256").rglob("*") if p.is_file()}


def _copy(result: PipelineResult, tmp_path: Path) -> Path:
    return Path(shutil.copytree(result.bundle_dir, tmp_path / "bundle"))


def _rewrite_manifest(folder: Path, change: Any) -> None:
    data = json.loads((folder / MANIFEST_NAME).read_text())
    change(data)
    (folder / MANIFEST_NAME).write_text(json.dumps(data))


def _nothing_registered(sessions: SessionFactory, store: ArtifactStore) -> None:
    with sessions() as s:
        for table in (ModelVersion, ModelVariant, Bundle, Experiment):
            assert s.exec(select(table)).all() == []
    assert _objects(store) == set()


def test_a_bundle_registers_its_version_variants_profile_and_experiment(
    sessions: SessionFactory, store: ArtifactStore, clock: FrozenClock, mlp_bundle: PipelineResult
) -> None:
    manifest = mlp_bundle.manifest
    with sessions() as s:
        row = bundles.register_bundle_dir(s, store, mlp_bundle.bundle_dir, clock=clock)
    assert (row.name, row.version, row.format) == ("digits-mlp", "1.0.0", "onnx")
    assert row.sha256 == manifest.variant("fp32").sha256
    assert row.inputs == [{"name": "input", "dtype": "float32", "shape": [-1, 64]}]
    with sessions() as s:
        view = bundles.get_bundle(s, "digits-mlp", "1.0.0")
        run = experiments.experiment_detail(s, manifest.lineage["experiment"]["run_id"])
        for sha in [v.sha256 for v in manifest.variants] + [manifest.profile.sha256]:
            assert registry.is_registered_artifact(s, sha)
        assert not registry.is_registered_artifact(s, "0" * 64)
    assert [v.variant for v in view.variants] == [v.name for v in manifest.variants]
    assert [v.is_baseline for v in view.variants] == [True, False, False, False, False]
    assert view.variants[2].precision == "int8" and view.variants[2].derived_from == "fp32-pruned"
    assert view.profile is not None and view.profile.sha256 == manifest.profile.sha256
    assert view.profile.media_type == "application/x-edgefleet-profile+protobuf"
    assert view.experiment_run_id == run.run_id
    assert view.lineage["dataset"]["hash"] == run.dataset_hash
    # Lineage is queryable from the run's side too.
    assert [(v.name, v.version) for v in run.versions] == [("digits-mlp", "1.0.0")]
    assert run.versions[0].variants == [v.name for v in manifest.variants]
    assert run.code_revision == manifest.lineage["code_revision"] and run.device == "cpu"
    assert _objects(store) == {v.sha256 for v in manifest.variants} | {manifest.profile.sha256}


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (
            lambda f: (f / "fp32-pruned.onnx").write_bytes(b"x" * 10),
            InvalidArtifactError,
            "bundle file fp32-pruned.onnx does not match its manifest",
        ),
        (lambda f: (f / "profile.pb").unlink(), InvalidArtifactError, "bundle file profile.pb is missing"),
        (
            lambda f: _rewrite_manifest(f, lambda d: d.update(version="2.0.0")),
            InvalidArtifactError,
            "bundle profile describes digits-mlp 1.0.0: expected digits-mlp 2.0.0",
        ),
        (
            lambda f: _rewrite_manifest(f, lambda d: d["lineage"]["experiment"].update(dataset_hash="xyz")),
            InvalidInputError,
            "lineage.invalid experiment record: dataset_hash",
        ),
        (
            lambda f: _rewrite_manifest(f, lambda d: d["lineage"]["experiment"].update(name="other")),
            InvalidInputError,
            "lineage.experiment trained 'other', expected 'digits-mlp'",
        ),
    ],
)
def test_a_bundle_that_does_not_match_its_manifest_registers_nothing(
    sessions: SessionFactory,
    store: ArtifactStore,
    mlp_bundle: PipelineResult,
    tmp_path: Path,
    damage: Any,
    error: type[Exception],
    message: str,
) -> None:
    folder = _copy(mlp_bundle, tmp_path)
    damage(folder)
    with sessions() as s, pytest.raises(error, match=message):
        bundles.register_bundle_dir(s, store, folder)
    _nothing_registered(sessions, store)


def test_uploaded_files_are_checked_against_the_manifest_and_removed_on_failure(
    sessions: SessionFactory, store: ArtifactStore, mlp_bundle: PipelineResult
) -> None:
    manifest_bytes = (mlp_bundle.bundle_dir / MANIFEST_NAME).read_bytes()
    stored = {}
    for name in mlp_bundle.manifest.files:
        if name != "tflite-int8.tflite":
            with (mlp_bundle.bundle_dir / name).open("rb") as f:
                stored[name] = store.put_stream(f)
    # A variant's bytes swapped for another's: every name arrived, but not the bytes pinned.
    stored["tflite-int8.tflite"] = stored["tflite-fp32.tflite"]
    with (
        sessions() as s,
        pytest.raises(InvalidArtifactError, match=r"tflite-int8\.tflite does not match its manifest"),
    ):
        bundles.register_bundle(s, store, manifest_bytes, stored)
    _nothing_registered(sessions, store)
    with (
        sessions() as s,
        pytest.raises(InvalidInputError, match="invalid bundle manifest: manifest is not valid JSON"),
    ):
        bundles.register_bundle(s, store, b"{", {})


def test_a_version_registers_once_and_a_run_id_keeps_its_record(
    sessions: SessionFactory, store: ArtifactStore, mlp_bundle: PipelineResult, tmp_path: Path
) -> None:
    with sessions() as s:
        bundles.register_bundle_dir(s, store, mlp_bundle.bundle_dir)
    before = _objects(store)
    with (
        sessions() as s,
        pytest.raises(ConflictError, match=r"digits-mlp version 1\.0\.0 is already registered"),
    ):
        bundles.register_bundle_dir(s, store, mlp_bundle.bundle_dir)
    assert _objects(store) == before  # the first version's files stay
    folder = _copy(mlp_bundle, tmp_path)

    def other_metrics(d: dict[str, Any]) -> None:
        d["version"] = "9"
        d["lineage"]["experiment"]["metrics"]["test_accuracy"] = 0.5

    _rewrite_manifest(folder, other_metrics)
    with sessions() as s, pytest.raises(ConflictError, match="already recorded with other metrics"):
        bundles.register_bundle_dir(s, store, folder)
    assert _objects(store) == before


def _fleet(
    sessions: SessionFactory, clock: FrozenClock, devices: dict[str, tuple[list[str], dict[str, str]]]
) -> None:
    ingestor = Ingestor(sessions, FleetTopics(FLEET), clock=clock)
    messages = []
    for device_id, (runtimes, labels) in devices.items():
        msg = status(device_id, labels=labels)
        msg.capabilities.CopyFrom(device_pb2.Capabilities(runtimes=runtimes, cpu_arch="aarch64"))
        messages.append(InboundMessage(f"ef/v1/{FLEET}/dev/{device_id}/status", msg.SerializeToString()))
    ingestor.ingest(messages)


def test_each_device_is_assigned_the_variant_it_can_run(
    sessions: SessionFactory,
    store: ArtifactStore,
    clock: FrozenClock,
    publisher: RecordingPublisher,
    mlp_bundle: PipelineResult,
) -> None:
    with sessions() as s:
        bundles.register_bundle_dir(s, store, mlp_bundle.bundle_dir, clock=clock)
    _fleet(
        sessions,
        clock,
        {
            "both": (["onnxruntime/1.32.0", "litert/2.3.0"], {}),
            "lite": (["litert/2.3.0"], {}),
            "ort": (["onnxruntime/1.32.0"], {}),
            "ort-fp32": (["onnxruntime/1.32.0"], {"precision": "fp32"}),
            "unknown": ([], {}),
        },
    )
    ids = ["both", "lite", "ort", "ort-fp32", "unknown"]
    with sessions() as s:
        assignments.assign(
            s, publisher, "digits-mlp", "1.0.0", device_ids=ids, fleet=FLEET, artifact_endpoint="h:1"
        )
    manifest = mlp_bundle.manifest
    sent = {d: desired_pb2.DesiredState.FromString(publisher.retained[d]).model for d in ids}
    smallest = min(manifest.variants, key=lambda v: v.length)
    smallest_onnx = min((v for v in manifest.variants if v.format == "onnx"), key=lambda v: v.length)
    smallest_fp32_onnx = min(
        (v for v in manifest.variants if v.format == "onnx" and v.precision == "fp32"), key=lambda v: v.length
    )
    expected = {
        "both": smallest.name,
        "lite": min((v for v in manifest.variants if v.format == "tflite"), key=lambda v: v.length).name,
        "ort": smallest_onnx.name,
        "ort-fp32": smallest_fp32_onnx.name,
        "unknown": "fp32",
    }
    assert {d: ref.variant for d, ref in sent.items()} == expected
    for ref in sent.values():
        v = manifest.variant(ref.variant)
        assert (ref.sha256, ref.length, ref.format, ref.precision) == (
            v.sha256,
            v.length,
            v.format,
            v.precision,
        )
        assert ref.profile.sha256 == manifest.profile.sha256 and ref.profile.length == manifest.profile.length
    # What the hub republishes on reconnect is what it published.
    with sessions() as s:
        assert dict(assignments.desired_payloads(s, fleet=FLEET, artifact_endpoint="h:1")) == {
            d: publisher.retained[d] for d in ids
        }
        listed = {d.id: d for d in list_devices(s, fleet=FLEET)}
    assert listed["lite"].desired_model is not None
    assert listed["lite"].desired_model.variant == expected["lite"]
    assert listed["lite"].desired_model.sha256 == manifest.variant(expected["lite"]).sha256
    assert listed["lite"].in_sync is False  # it has not reported the variant yet


def test_a_device_no_variant_fits_fails_the_whole_assignment(
    sessions: SessionFactory,
    store: ArtifactStore,
    clock: FrozenClock,
    publisher: RecordingPublisher,
    mlp_bundle: PipelineResult,
) -> None:
    with sessions() as s:
        bundles.register_bundle_dir(s, store, mlp_bundle.bundle_dir, clock=clock)
    _fleet(sessions, clock, {"ok": (["onnxruntime/1.32.0"], {}), "odd": (["openvino/2024.1"], {})})
    with (
        sessions() as s,
        pytest.raises(NoCompatibleVariantError, match=r"odd: it runs openvino/2024\.1, but fp32 needs"),
    ):
        assignments.assign(
            s,
            publisher,
            "digits-mlp",
            "1.0.0",
            device_ids=["ok", "odd"],
            fleet=FLEET,
            artifact_endpoint="h:1",
        )
    with sessions() as s:
        assert s.exec(select(DesiredState)).all() == []
    assert publisher.retained == {}


# --- HTTP API --------------------------------------------------------------------------------


@pytest.fixture
def client(ctx: HubContext) -> Iterator[TestClient]:
    with TestClient(create_app(ctx)) as c:
        yield c


@pytest.fixture
def auth(ctx: HubContext) -> dict[Role, dict[str, str]]:
    headers = {}
    with ctx.sessions() as s:
        for role in Role:
            _row, secret = tokens.create_token(s, f"t-{role.value}", role)
            headers[role] = {"Authorization": f"Bearer {secret}"}
    return headers


def _form(folder: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    names = [v["file"] for v in manifest["variants"]] + [manifest["profile"]["file"]]
    return [("manifest", ("manifest.json", (folder / MANIFEST_NAME).read_bytes(), "application/json"))] + [
        ("file", (n, (folder / n).read_bytes(), "application/octet-stream")) for n in names
    ]


def test_bundles_and_experiments_over_http(
    client: TestClient,
    auth: dict[Role, dict[str, str]],
    ctx: HubContext,
    mlp_bundle: PipelineResult,
    tmp_path: Path,
) -> None:
    operator, viewer = auth[Role.OPERATOR], auth[Role.VIEWER]
    record = dict(mlp_bundle.manifest.lineage["experiment"])
    run_id = record["run_id"]
    # Recording a run is idempotent; a different record under the same id is a conflict.
    for _ in range(2):
        r = client.put(f"/api/v1/experiments/{run_id}", headers=operator, json=record)
        assert r.status_code == 200, r.text
    assert client.put(f"/api/v1/experiments/{run_id}", headers=viewer, json=record).status_code == 403
    r = client.put(f"/api/v1/experiments/{run_id}", headers=operator, json=record | {"seed": 7})
    assert r.status_code == 409 and "already recorded with other seed" in r.json()["detail"]
    r = client.put(
        f"/api/v1/experiments/{run_id}", headers=operator, json=record | {"started_at": "2030-01-01T00:00:00"}
    )
    assert r.status_code == 422
    assert client.get(f"/api/v1/experiments/{run_id}", headers=viewer).json()["versions"] == []

    # A file that does not match: 400, and nothing stays in the store.
    bad = _copy(mlp_bundle, tmp_path)
    (bad / "int8-dynamic.onnx").write_bytes(b"not the pinned bytes")
    r = client.post("/api/v1/bundles", headers=operator, files=_form(bad))
    assert r.status_code == 400 and "int8-dynamic.onnx does not match its manifest" in r.json()["detail"]
    assert _objects(ctx.store) == set()
    r = client.post(
        "/api/v1/bundles", headers=operator, files=[("manifest", ("m.json", b"{}", "application/json"))]
    )
    assert r.status_code == 422

    r = client.post("/api/v1/bundles", headers=operator, files=_form(mlp_bundle.bundle_dir))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["experiment_run_id"] == run_id
    assert [v["variant"] for v in body["variants"]] == [v.name for v in mlp_bundle.manifest.variants]
    assert (
        client.post("/api/v1/bundles", headers=operator, files=_form(mlp_bundle.bundle_dir)).status_code
        == 409
    )

    shown = client.get("/api/v1/models/digits-mlp/1.0.0/bundle", headers=viewer).json()
    assert shown == body
    listed = client.get("/api/v1/experiments", headers=viewer, params={"name": "digits-mlp"}).json()
    assert listed["count"] == 1 and listed["data"][0]["run_id"] == run_id
    detail = client.get(f"/api/v1/experiments/{run_id}", headers=viewer).json()
    assert [(v["name"], v["version"]) for v in detail["versions"]] == [("digits-mlp", "1.0.0")]
    assert client.get("/api/v1/experiments/ffffffffffff", headers=viewer).status_code == 404
    # A version pushed as one file has one variant, and a bundle view without a profile.
    from tests.unit.cloud.helpers import tiny_onnx

    r = client.post(
        "/api/v1/models",
        headers=operator,
        data={"name": "tiny", "version": "1"},
        files={"file": ("t.onnx", tiny_onnx())},
    )
    assert r.status_code == 201
    tiny = client.get("/api/v1/models/tiny/1/bundle", headers=viewer).json()
    assert [(v["variant"], v["precision"], v["is_baseline"]) for v in tiny["variants"]] == [
        ("fp32", "fp32", True)
    ]
    assert tiny["profile"] is None and tiny["experiment_run_id"] is None


def test_the_artifact_service_serves_variants_and_the_profile(
    sessions: SessionFactory, store: ArtifactStore, mlp_bundle: PipelineResult
) -> None:
    import grpc

    from cloud.transport.grpc_server import start_grpc_server
    from edgefleet_proto.v1 import artifact_pb2, artifact_pb2_grpc
    from model_tools.profile import parse_profile

    with sessions() as s:
        bundles.register_bundle_dir(s, store, mlp_bundle.bundle_dir)

    def is_served(sha256: str) -> bool:
        with sessions() as s:
            return registry.is_registered_artifact(s, sha256)

    server, port = start_grpc_server(store, is_served, port=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = artifact_pb2_grpc.ArtifactServiceStub(channel)
            profile = mlp_bundle.manifest.profile
            data = b"".join(
                c.data for c in stub.Fetch(artifact_pb2.FetchRequest(sha256=profile.sha256), timeout=10)
            )
            assert len(data) == profile.length
            assert parse_profile(data).model_version == "1.0.0"
            variant = mlp_bundle.manifest.variant("tflite-int8")
            assert (
                stub.Stat(artifact_pb2.StatRequest(sha256=variant.sha256), timeout=10).length
                == variant.length
            )
            with pytest.raises(grpc.RpcError) as caught:
                stub.Stat(artifact_pb2.StatRequest(sha256="f" * 64), timeout=10)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop(0)

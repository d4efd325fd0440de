"""Version bundles: a manifest, the variant files it pins, and a data profile (light: stdlib only).

A bundle is a folder:

    manifest.json          what the version is (see BundleManifest)
    fp32.onnx, ...         one file per published variant, pinned by sha256 and length
    profile.pb             the baseline DataProfile

The manifest names the model and version, its lineage (experiment, data set
hash, code revision), its metrics, the input and output schema (dtype, shape,
preprocessing) and, per variant, the format, precision, sha256, length and the
runtimes that can run it. Variants the gates kept out are listed with the
reasons, without files. :func:`verify_bundle` checks that the files on disk are
exactly what the manifest pins; the hub checks the same again on upload.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_tools.atomic import atomic_write
from model_tools.errors import BundleError
from model_tools.hashing import sha256_file
from model_tools.trial_policy import TrialPolicyError, parse_trial_policy

__all__ = [
    "FORMATS",
    "MANIFEST_NAME",
    "PRECISIONS",
    "SCHEMA",
    "BundleManifest",
    "ProfileEntry",
    "RejectedVariant",
    "RuntimeNeed",
    "TensorSchema",
    "VariantEntry",
    "load_manifest",
    "runtime_needs",
    "verify_bundle",
    "write_manifest",
]

SCHEMA = "edgefleet.bundle/v1"
MANIFEST_NAME = "manifest.json"
FORMATS = ("onnx", "tflite")
PRECISIONS = ("fp32", "int8")
# Bundle file names are plain names: no folders, nothing that escapes the bundle.
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VARIANT_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,31}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^\d+(\.\d+)*$")


@dataclass(frozen=True)
class RuntimeNeed:
    """A runtime that can run a variant: ``name`` at ``min_version`` or newer."""

    name: str
    min_version: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "min_version": self.min_version}


@dataclass(frozen=True)
class TensorSchema:
    name: str
    dtype: str
    shape: tuple[int, ...]
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.preprocessing:
            out["preprocessing"] = self.preprocessing
        return out


@dataclass(frozen=True)
class VariantEntry:
    """A published variant and its file."""

    name: str
    file: str
    format: str
    precision: str
    sha256: str
    length: int
    runtimes: tuple[RuntimeNeed, ...]
    """Any one of these runs it."""
    metrics: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, Any] = field(default_factory=dict)
    derived_from: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "format": self.format,
            "precision": self.precision,
            "sha256": self.sha256,
            "length": self.length,
            "runtimes": [r.to_dict() for r in self.runtimes],
            "metrics": self.metrics,
            "gates": self.gates,
            "derived_from": self.derived_from,
            "details": self.details,
        }


@dataclass(frozen=True)
class RejectedVariant:
    """A variant the gates kept out: no file ships, the reasons do."""

    name: str
    format: str
    precision: str
    reasons: tuple[str, ...]
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "precision": self.precision,
            "reasons": list(self.reasons),
            "metrics": self.metrics,
            "details": self.details,
        }


@dataclass(frozen=True)
class ProfileEntry:
    file: str
    sha256: str
    length: int
    media_type: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "length": self.length,
            "media_type": self.media_type,
        }


@dataclass(frozen=True)
class BundleManifest:
    """Everything a registry needs to record a version, and a device to choose a variant."""

    name: str
    version: str
    created_at: str
    lineage: dict[str, Any]
    metrics: dict[str, Any]
    inputs: tuple[TensorSchema, ...]
    outputs: tuple[TensorSchema, ...]
    classes: tuple[str, ...]
    baseline: str
    """The fp32 ONNX variant every other one is judged against."""
    variants: tuple[VariantEntry, ...]
    profile: ProfileEntry
    rejected: tuple[RejectedVariant, ...] = ()
    gate_policy: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA
    # The trial policy devices judge this version with unless a rollout or an assignment sets
    # another (model_tools.trial_policy); None: the device's defaults.
    trial_policy: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _validate(self)
        if self.trial_policy is not None:
            try:
                canonical = parse_trial_policy(self.trial_policy).to_dict()
            except TrialPolicyError as e:
                raise BundleError(f"bundle {self.name} {self.version}: manifest {e}") from e
            object.__setattr__(self, "trial_policy", canonical)

    def variant(self, name: str) -> VariantEntry:
        for v in self.variants:
            if v.name == name:
                return v
        raise BundleError(f"bundle {self.name} {self.version} has no variant {name!r}")

    @property
    def files(self) -> dict[str, tuple[str, int]]:
        """Every file the manifest pins: name -> (sha256, length)."""
        pinned = {v.file: (v.sha256, v.length) for v in self.variants}
        pinned[self.profile.file] = (self.profile.sha256, self.profile.length)
        return pinned

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "name": self.name,
            "version": self.version,
            "created_at": self.created_at,
            "lineage": self.lineage,
            "metrics": self.metrics,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "classes": list(self.classes),
            "baseline": self.baseline,
            "variants": [v.to_dict() for v in self.variants],
            "rejected": [r.to_dict() for r in self.rejected],
            "profile": self.profile.to_dict(),
            "gate_policy": self.gate_policy,
            # Left out when unset, so manifests written before trial policies keep their bytes.
            **({"trial_policy": self.trial_policy} if self.trial_policy is not None else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> BundleManifest:
        """Parse a manifest; BundleError names the first field that is missing or of the wrong kind."""
        r = _Reader(data, "manifest")
        schema = r.str_("schema")
        if schema != SCHEMA:
            raise BundleError(f"manifest schema is {schema!r}: expected {SCHEMA!r}")
        return cls(
            schema=schema,
            name=r.str_("name"),
            version=r.str_("version"),
            created_at=r.str_("created_at"),
            lineage=r.dict_("lineage"),
            metrics=r.dict_("metrics"),
            inputs=tuple(_tensor(t) for t in r.list_("inputs")),
            outputs=tuple(_tensor(t) for t in r.list_("outputs")),
            classes=tuple(str(c) for c in r.list_("classes")),
            baseline=r.str_("baseline"),
            variants=tuple(_variant(v) for v in r.list_("variants")),
            rejected=tuple(_rejected(v) for v in r.list_("rejected", default=[])),
            profile=_profile(r.child("profile")),
            gate_policy=r.dict_("gate_policy", default={}),
            trial_policy=r.data.get("trial_policy"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> BundleManifest:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"manifest is not valid JSON: {e}") from e
        return cls.from_dict(data)


def write_manifest(directory: str | os.PathLike[str], manifest: BundleManifest) -> Path:
    """Write ``manifest.json`` into ``directory`` atomically (temp file, fsync, rename)."""
    target = Path(directory) / MANIFEST_NAME
    atomic_write(target, manifest.to_json())
    return target


def load_manifest(directory: str | os.PathLike[str]) -> BundleManifest:
    path = Path(directory) / MANIFEST_NAME
    try:
        text = path.read_bytes()
    except OSError as e:
        raise BundleError(f"cannot read {path}: {e.strerror or e}; expected a bundle folder") from e
    return BundleManifest.from_json(text)


def verify_bundle(directory: str | os.PathLike[str]) -> BundleManifest:
    """Load the manifest and check each pinned file's length and sha256; BundleError names a mismatch."""
    folder = Path(directory)
    manifest = load_manifest(folder)
    for name, (sha256, length) in sorted(manifest.files.items()):
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError as e:
            raise BundleError(f"bundle file {name} is missing: the manifest pins it ({length} bytes)") from e
        if size != length:
            raise BundleError(
                f"bundle file {name} does not match its manifest: expected {length} bytes, got {size}"
            )
        digest = sha256_file(path)
        if digest != sha256:
            raise BundleError(
                f"bundle file {name} does not match its manifest: expected sha256 {sha256}, got {digest}"
            )
    return manifest


# --- parsing and validation ------------------------------------------------------------------


class _Reader:
    """Reads one JSON object field by field; errors name the full path of the field."""

    _MISSING: Any = object()

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, Mapping):
            raise BundleError(f"{where}: expected an object, got {type(data).__name__}")
        self.data = data
        self.where = where

    def _get(self, key: str, default: Any) -> Any:
        if key in self.data:
            return self.data[key]
        if default is self._MISSING:
            raise BundleError(f"{self.where}.{key} is missing")
        return default

    def str_(self, key: str, default: Any = _MISSING) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise BundleError(f"{self.where}.{key}: expected a string, got {value!r}")
        return value

    def int_(self, key: str) -> int:
        value = self._get(key, self._MISSING)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BundleError(f"{self.where}.{key}: expected a non-negative integer, got {value!r}")
        return value

    def list_(self, key: str, default: Any = _MISSING) -> list[Any]:
        value = self._get(key, default)
        if not isinstance(value, list):
            raise BundleError(f"{self.where}.{key}: expected a list, got {type(value).__name__}")
        return value

    def dict_(self, key: str, default: Any = _MISSING) -> dict[str, Any]:
        value = self._get(key, default)
        if not isinstance(value, Mapping):
            raise BundleError(f"{self.where}.{key}: expected an object, got {type(value).__name__}")
        return dict(value)

    def child(self, key: str) -> _Reader:
        return _Reader(self._get(key, self._MISSING), f"{self.where}.{key}")


def _tensor(data: Any) -> TensorSchema:
    r = _Reader(data, "manifest tensor")
    shape = r.list_("shape")
    if any(isinstance(d, bool) or not isinstance(d, int) or d < -1 for d in shape):
        raise BundleError(
            f"tensor {data.get('name')!r}: shape must be integers (-1 for dynamic), got {shape}"
        )
    return TensorSchema(
        name=r.str_("name"),
        dtype=r.str_("dtype"),
        shape=tuple(shape),
        preprocessing=r.dict_("preprocessing", {}),
    )


def _variant(data: Any) -> VariantEntry:
    r = _Reader(
        data, f"manifest variant {data.get('name')!r}" if isinstance(data, Mapping) else "manifest variant"
    )
    needs = []
    for item in r.list_("runtimes"):
        n = _Reader(item, f"{r.where}.runtimes[]")
        needs.append(RuntimeNeed(name=n.str_("name"), min_version=n.str_("min_version")))
    derived = r._get("derived_from", None)
    if derived is not None and not isinstance(derived, str):
        raise BundleError(f"{r.where}.derived_from: expected a variant name or null, got {derived!r}")
    return VariantEntry(
        name=r.str_("name"),
        file=r.str_("file"),
        format=r.str_("format"),
        precision=r.str_("precision"),
        sha256=r.str_("sha256"),
        length=r.int_("length"),
        runtimes=tuple(needs),
        metrics=r.dict_("metrics", {}),
        gates=r.dict_("gates", {}),
        derived_from=derived,
        details=r.dict_("details", {}),
    )


def _rejected(data: Any) -> RejectedVariant:
    r = _Reader(data, "manifest rejected variant")
    return RejectedVariant(
        name=r.str_("name"),
        format=r.str_("format"),
        precision=r.str_("precision"),
        reasons=tuple(str(x) for x in r.list_("reasons")),
        metrics=r.dict_("metrics", {}),
        details=r.dict_("details", {}),
    )


def _profile(r: _Reader) -> ProfileEntry:
    return ProfileEntry(
        file=r.str_("file"), sha256=r.str_("sha256"), length=r.int_("length"), media_type=r.str_("media_type")
    )


def _validate(m: BundleManifest) -> None:
    if not m.variants:
        raise BundleError(
            f"bundle {m.name} {m.version} has no published variant: expected at least the fp32 one"
        )
    if len(m.inputs) != 1 or len(m.outputs) != 1:
        raise BundleError(
            f"expected one input and one output in the schema, got {len(m.inputs)} and {len(m.outputs)}"
        )
    seen_names: set[str] = set()
    seen_files: set[str] = set()
    for v in m.variants:
        where = f"variant {v.name!r}"
        if not _VARIANT_NAME.match(v.name):
            raise BundleError(f"{where}: expected a lowercase name of letters, digits, '.' and '-'")
        if v.name in seen_names:
            raise BundleError(f"{where} is listed twice: expected unique variant names")
        seen_names.add(v.name)
        _check_file(where, v.file, v.sha256)
        if v.file in seen_files:
            raise BundleError(f"{where}: file {v.file} is used by another variant")
        seen_files.add(v.file)
        if v.format not in FORMATS:
            raise BundleError(f"{where}: format {v.format!r} is not one of {FORMATS}")
        if v.precision not in PRECISIONS:
            raise BundleError(f"{where}: precision {v.precision!r} is not one of {PRECISIONS}")
        if v.length <= 0:
            raise BundleError(f"{where}: expected a positive length, got {v.length}")
        if not v.runtimes:
            raise BundleError(f"{where}: expected at least one runtime that can run it")
        for need in v.runtimes:
            if not need.name or not _VERSION.match(need.min_version):
                raise BundleError(
                    f"{where}: runtime {need.name!r} needs a version like 1.17, got {need.min_version!r}"
                )
    if m.baseline not in seen_names:
        raise BundleError(
            f"baseline {m.baseline!r} is not a published variant: expected one of {sorted(seen_names)}"
        )
    base = next(v for v in m.variants if v.name == m.baseline)
    if (base.format, base.precision) != ("onnx", "fp32"):
        raise BundleError(
            f"baseline {base.name!r} is {base.format} {base.precision}: expected an fp32 ONNX variant"
        )
    _check_file("profile", m.profile.file, m.profile.sha256)
    if m.profile.file in seen_files:
        raise BundleError(f"profile file {m.profile.file} is also a variant's file")
    if m.profile.length <= 0:
        raise BundleError(f"profile: expected a positive length, got {m.profile.length}")
    rejected = {r.name for r in m.rejected}
    both = sorted(rejected & seen_names)
    if both:
        raise BundleError(f"variants {both} are listed as both published and rejected")


def _check_file(where: str, name: str, sha256: str) -> None:
    if not _FILE_NAME.match(name) or name == MANIFEST_NAME:
        raise BundleError(f"{where}: file name {name!r} must be a plain file name inside the bundle")
    if not _SHA256.match(sha256):
        raise BundleError(f"{where}: sha256 must be 64 lowercase hex digits, got {sha256!r}")


def runtime_needs(fmt: str, opset: int | None = None) -> tuple[RuntimeNeed, ...]:
    """The runtimes that can run a file of ``fmt`` (for ONNX, new enough for its opset)."""
    if fmt == "onnx":
        if opset is None:
            return (RuntimeNeed("onnxruntime", "1.17"),)
        known = min(max(opset, min(_ORT_FOR_OPSET)), max(_ORT_FOR_OPSET))
        return (RuntimeNeed("onnxruntime", _ORT_FOR_OPSET[known]),)
    if fmt == "tflite":
        return (RuntimeNeed("litert", "1.0"), RuntimeNeed("tflite-runtime", "2.14"))
    raise BundleError(f"format {fmt!r} is not one of {FORMATS}")


# The first onnxruntime release that implements each default-domain opset.
_ORT_FOR_OPSET: dict[int, str] = {
    17: "1.13",
    18: "1.14",
    19: "1.16",
    20: "1.17",
    21: "1.18",
    22: "1.20",
    23: "1.22",
}

"""Hub configuration: one ``Settings`` read from ``EDGEFLEET_*`` environment variables.

Fields left unset resolve against ``data_dir`` (``resolved_database_url()``,
``resolved_artifact_dir()``) so one folder holds a single-machine hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgefleet_proto.topics import DEFAULT_PREFIX, TopicError, validate_id, validate_prefix

MiB = 1024 * 1024
_DB_SCHEMES = ("sqlite", "postgresql")


class Settings(BaseSettings):
    """Everything a hub process needs to know; defaults run on one machine."""

    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_", extra="ignore")

    data_dir: Path = Path(".edgefleet")
    database_url: str | None = None
    # Upgrade an older database schema on start instead of refusing (`fleet db upgrade` does it by hand,
    # after a backup: the default, since a migration cannot be undone by restarting the old hub).
    db_auto_upgrade: bool = False
    artifact_dir: Path | None = None
    # Artifacts (cloud.storage): "local" keeps them in artifact_dir; "s3" keeps them in an S3-compatible
    # bucket shared by hub replicas, with artifact_dir as this replica's cache of at most
    # artifact_cache_max_bytes (least recently used files go first). Credentials come from the AWS
    # environment or config chain only (AWS_ACCESS_KEY_ID, AWS_PROFILE, an instance role).
    artifact_store: Literal["local", "s3"] = "local"
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    artifact_cache_max_bytes: int = Field(default=10 * 1024 * MiB, ge=MiB)
    fleet: str = "default"
    topic_prefix: str = DEFAULT_PREFIX

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_protocol: Literal["5", "3.1.1"] = "5"
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_keepalive_s: int = Field(default=30, ge=5, le=3600)
    # Empty: plain subscriptions, right for one hub. Replicas set a group (e.g. edgefleet-hub) so that
    # each telemetry window, sketch and event goes to one of them. A plain subscription is also what
    # survives a Mosquitto restart: Mosquitto 2.0 restores a persistent session without its shared
    # subscriptions, so what devices publish before the hub subscribes again would reach no one.
    share_group: str = ""
    # How long publish_desired waits for the broker's PUBACK before reporting failure.
    publish_timeout_s: float = Field(default=5.0, gt=0)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    grpc_public_endpoint: str | None = None
    # Calls the artifact service holds before it starts them; past it new calls are cancelled
    # (cloud.transport.grpc_server.DEFAULT_MAX_PENDING_CALLS says why it is large).
    grpc_max_pending_calls: int = Field(default=20_000, ge=1)
    # Downloads streamed at once; more are refused with RESOURCE_EXHAUSTED and come back after a back-off.
    grpc_max_active_downloads: int = Field(default=1_000, ge=1)

    max_upload_bytes: int = Field(default=256 * MiB, gt=0)
    # Validation of uploaded ONNX files (cloud.services.onnx_schema): files above the in-process size are
    # checked in a child process whose address space is capped at the memory limit (a model that needs
    # more is refused with 413); files above the load size are not loaded in onnxruntime at all.
    validate_load_max_bytes: int = Field(default=1024 * MiB, ge=0)
    validate_memory_limit_bytes: int = Field(default=2048 * MiB, ge=256 * MiB)
    validate_in_process_max_bytes: int = Field(default=8 * MiB, ge=0)
    # Bounded so that a flood of device messages slows the broker connection (back-pressure)
    # instead of growing the hub's memory without limit.
    ingest_queue_size: int = Field(default=10_000, gt=0)
    ingest_batch_size: int = Field(default=500, gt=0)
    # How long ingest waits for more messages to store with the first of a batch: a transaction per
    # message costs several times what a message itself does (see docs/benchmarks.md).
    ingest_linger_s: float = Field(default=0.05, ge=0, le=5)
    # How often the rollout engine advances every active rollout (it is also kicked on mutations).
    rollout_tick_s: float = Field(default=2.0, gt=0)
    # Hub replicas (cloud.leader): how often the scheduler leader proves it still holds its lock, and
    # a follower tries to take it. A killed leader's jobs resume on a follower within about this long.
    leader_renew_s: float = Field(default=5.0, gt=0, le=300)
    # Re-reading the retained statuses (cloud.transport.mqtt) after the broker dropped messages or a
    # telemetry seq gap: at most once per this many seconds (a re-read sends every device's status).
    heal_min_interval_s: float = Field(default=30.0, ge=0, le=3600)

    # Fleet observability (cloud.telemetry, cloud.drift, cloud.alerts, cloud.training.continuous).
    # Rollups and scores are kept per cohort x model version x bucket of this many seconds.
    rollup_bucket_s: int = Field(default=300, ge=10, le=86_400)
    # How often rollups are rebuilt, drift scored, alert rules evaluated and training triggers checked.
    observe_interval_s: float = Field(default=30.0, gt=0)
    # Raw sketch and telemetry rows expire after this long (late windows older than it are not rolled up).
    raw_retention_s: int = Field(default=7 * 86_400, ge=3600)
    # Rollups and cohort metrics are kept this many days.
    rollup_retention_days: int = Field(default=400, ge=1)
    # Significance level of the KS drift test.
    drift_alpha: float = Field(default=0.01, gt=0, lt=0.5)
    # Webhook delivery of alert notifications.
    alert_webhook_timeout_s: float = Field(default=5.0, gt=0)
    alert_webhook_attempts: int = Field(default=6, ge=1, le=20)
    alert_webhook_backoff_s: float = Field(default=1.0, gt=0)
    # HMAC-SHA256 key for the X-Edgefleet-Signature header (unset: the hub makes one in data_dir).
    alert_webhook_secret: SecretStr | None = None
    # What a continuous-training run does with a challenger that beats the champion: start a canary
    # rollout at once, or wait for an operator's approval.
    ct_policy: Literal["canary", "approval"] = "approval"
    # A cron expression (UTC) for scheduled retraining; unset: no schedule.
    ct_schedule: str | None = None
    # Retrain once this many new labelled predictions have been reported since the last run (0: never).
    ct_labelled_samples: int = Field(default=0, ge=0)
    # Retrain when a cohort's labelled accuracy drops this many points below the champion's held-out
    # accuracy (0: never).
    ct_accuracy_drop: float = Field(default=0.0, ge=0, le=1)

    # Device identity and TLS (cloud.identity; docs/security.md, docs/runbooks/certificates.md).
    # The fleet CA's folder (ca.key mode 0600, ca.crt); unset: {data_dir}/identity.
    identity_dir: Path | None = None
    # The CRL (PEM) that the broker's `crlfile` names; rewritten at each revocation and at hub start.
    # Unset: {identity_dir}/crl.pem.
    crl_file: Path | None = None
    # A broker refuses every client once the CRL it holds is past its next update: keep it long, and
    # rewrite it (`fleet identity crl`, a hub restart) well before.
    crl_days: int = Field(default=365, ge=1, le=3650)
    device_cert_days: int = Field(default=365, ge=1, le=3650)
    # The broker as provisioned agents reach it (host:port); unset: {mqtt_host}:8883.
    device_mqtt_endpoint: str | None = None
    # The hub's MQTT client over TLS: on when a CA file is set (or mqtt_tls); CERT and KEY are its
    # client certificate (CN edgefleet-hub, `fleet identity hub-cert`), which the shipped broker requires.
    mqtt_tls: bool = False
    mqtt_tls_ca: Path | None = None
    mqtt_tls_cert: Path | None = None
    mqtt_tls_key: Path | None = None
    # The gRPC artifact service over TLS (CERT and KEY: `fleet identity server-cert`); with CLIENT_CA
    # every client must present a certificate that CA issued (mTLS). Plaintext: see cloud.identity.grpc_auth.
    grpc_tls_cert: Path | None = None
    grpc_tls_key: Path | None = None
    grpc_tls_client_ca: Path | None = None

    # Dashboard sessions (ef_session cookie): how long one lasts; it never outlives its token.
    session_ttl_s: int = Field(default=8 * 3600, ge=60, le=30 * 86_400)

    # Logs (cloud.observability.logging): "text" lines for people, "json" (one object a line, with
    # request ids, plus an access line per API request) for a log pipeline.
    log_format: Literal["text", "json"] = "text"

    # Key rotations proposed through the API (POST /api/v1/keys/rotations) in any hour, counted in the
    # database so that the limit holds across hub replicas and restarts; past it: 429 with Retry-After.
    key_rotations_per_hour: int = Field(default=6, ge=1, le=1000)

    @field_validator("fleet")
    @classmethod
    def _fleet_is_an_id(cls, value: str) -> str:
        try:
            return validate_id("fleet", value)
        except TopicError as e:
            raise ValueError(str(e)) from e

    @field_validator("share_group")
    @classmethod
    def _share_group_is_an_id(cls, value: str) -> str:
        if not value:
            return value
        try:
            return validate_id("share group", value)
        except TopicError as e:
            raise ValueError(str(e)) from e

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_topic_levels(cls, value: str) -> str:
        try:
            return validate_prefix(value)
        except TopicError as e:
            raise ValueError(str(e)) from e

    @field_validator("database_url")
    @classmethod
    def _database_is_supported(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in _DB_SCHEMES or "://" not in value:
            raise ValueError(
                f"unsupported database URL scheme {scheme!r}: expected sqlite:///path or "
                "postgresql+psycopg://user@host:port/db"
            )
        return value

    @field_validator("s3_prefix")
    @classmethod
    def _prefix_is_a_folder(cls, value: str) -> str:
        if value.startswith("/"):
            raise ValueError(f"invalid S3 prefix {value!r}: expected a key prefix without a leading '/'")
        return value if not value or value.endswith("/") else value + "/"

    @field_validator("grpc_public_endpoint")
    @classmethod
    def _endpoint_is_host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"invalid gRPC public endpoint {value!r}: expected host:port")
        return value

    def resolved_database_url(self) -> str:
        """The configured URL, or a SQLite file in ``data_dir``."""
        if self.database_url is not None:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'hub.db'}"

    def resolved_artifact_dir(self) -> Path:
        """The configured artifact folder, or ``{data_dir}/artifacts``."""
        return self.artifact_dir if self.artifact_dir is not None else self.data_dir / "artifacts"

    def resolved_identity_dir(self) -> Path:
        return self.identity_dir if self.identity_dir is not None else self.data_dir / "identity"

    def resolved_crl_file(self) -> Path:
        return self.crl_file if self.crl_file is not None else self.resolved_identity_dir() / "crl.pem"

    def mqtt_uses_tls(self) -> bool:
        return self.mqtt_tls or self.mqtt_tls_ca is not None or self.mqtt_tls_cert is not None

    def resolved_device_mqtt_endpoint(self) -> str:
        if self.device_mqtt_endpoint is not None:
            return self.device_mqtt_endpoint
        host = f"[{self.mqtt_host}]" if ":" in self.mqtt_host else self.mqtt_host
        return f"{host}:8883"

    @model_validator(mode="after")
    def _s3_has_a_bucket(self) -> Settings:
        if self.artifact_store == "s3" and not self.s3_bucket:
            raise ValueError(
                "EDGEFLEET_ARTIFACT_STORE=s3 needs a bucket: expected EDGEFLEET_S3_BUCKET, got none"
            )
        return self

    @model_validator(mode="after")
    def _tls_files_in_pairs(self) -> Settings:
        for what, cert, key in (
            ("MQTT", self.mqtt_tls_cert, self.mqtt_tls_key),
            ("GRPC", self.grpc_tls_cert, self.grpc_tls_key),
        ):
            if (cert is None) != (key is None):
                raise ValueError(
                    f"EDGEFLEET_{what}_TLS_CERT and EDGEFLEET_{what}_TLS_KEY go together: expected both or "
                    f"neither, got only {'CERT' if key is None else 'KEY'}"
                )
        if self.grpc_tls_client_ca is not None and self.grpc_tls_cert is None:
            raise ValueError(
                "EDGEFLEET_GRPC_TLS_CLIENT_CA needs TLS on the gRPC service: expected "
                "EDGEFLEET_GRPC_TLS_CERT and EDGEFLEET_GRPC_TLS_KEY too"
            )
        return self

    def admin_token_path(self) -> Path:
        return self.data_dir / "admin.token"

    def public_grpc_endpoint(self, bound_port: int) -> str:
        """What devices are told to fetch artifacts from."""
        if self.grpc_public_endpoint is not None:
            return self.grpc_public_endpoint
        return f"{self.grpc_host}:{bound_port}"

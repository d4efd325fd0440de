"""Baseline: the hub's schema as ``create_all`` made it before migrations existed.

Every table of the hub at the first migrated release, less the device status columns that
revision 0002 adds. ``fleet db upgrade`` stamps a database that ``create_all`` made with
the revision whose tables it matches, then upgrades it from there.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "alert_receiver",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fleet", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fleet", "name", name="uq_alert_receiver_fleet_name"),
    )
    with op.batch_alter_table("alert_receiver", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_receiver_fleet"), ["fleet"], unique=False)

    op.create_table(
        "alert_rule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fleet", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("feature", sa.String(length=128), nullable=True),
        sa.Column("reference", sa.String(length=16), nullable=True),
        sa.Column("comparison", sa.String(length=2), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("for_s", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fleet", "name", name="uq_alert_rule_fleet_name"),
    )
    with op.batch_alter_table("alert_rule", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_rule_fleet"), ["fleet"], unique=False)

    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "role",
            sa.Enum("viewer", "operator", "admin", name="role", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_sha256"),
    )
    op.create_table(
        "audit_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fleet", sa.String(length=128), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("actor_role", sa.String(length=16), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("operation", sa.String(length=255), nullable=False),
        sa.Column("object_type", sa.String(length=64), nullable=False),
        sa.Column("object_id", sa.String(length=255), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.create_index("ix_audit_entry_actor", ["actor"], unique=False)
        batch_op.create_index("ix_audit_entry_at", ["at"], unique=False)
        batch_op.create_index("ix_audit_entry_object", ["object_type", "object_id"], unique=False)

    op.create_table(
        "cohort",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fleet", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("selector", sa.String(), nullable=False),
        sa.Column("devices", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fleet", "name", name="uq_cohort_fleet_name"),
    )
    with op.batch_alter_table("cohort", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cohort_fleet"), ["fleet"], unique=False)

    op.create_table(
        "cohort_metric",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fleet", sa.String(length=128), nullable=False),
        sa.Column("cohort_id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bucket_s", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("feature", sa.String(length=128), nullable=False),
        sa.Column("reference", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("drifted", sa.Boolean(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "fleet",
            "cohort_id",
            "model_name",
            "model_version",
            "bucket_start",
            "metric",
            "feature",
            "reference",
            name="uq_cohort_metric_key",
        ),
    )
    with op.batch_alter_table("cohort_metric", schema=None) as batch_op:
        batch_op.create_index(
            "ix_cohort_metric_series", ["fleet", "metric", "cohort_id", "bucket_start"], unique=False
        )

    op.create_table(
        "cohort_rollup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fleet", sa.String(length=128), nullable=False),
        sa.Column("cohort_id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bucket_s", sa.Integer(), nullable=False),
        sa.Column("devices", sa.Integer(), nullable=False),
        sa.Column("windows", sa.Integer(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("p95_ms", sa.Float(), nullable=True),
        sa.Column("cpu_percent", sa.Float(), nullable=True),
        sa.Column("rss_bytes", sa.BigInteger(), nullable=True),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("sketch", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "fleet", "cohort_id", "model_name", "model_version", "bucket_start", name="uq_cohort_rollup_key"
        ),
    )
    with op.batch_alter_table("cohort_rollup", schema=None) as batch_op:
        batch_op.create_index(
            "ix_cohort_rollup_series", ["fleet", "cohort_id", "model_name", "bucket_start"], unique=False
        )

    op.create_table(
        "command_seq",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_table(
        "device",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("fleet", sa.String(length=128), nullable=False),
        sa.Column(
            "state",
            sa.Enum("online", "offline", "unknown", name="devicestate", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("agent_version", sa.String(), nullable=False),
        sa.Column("health", sa.String(), nullable=False),
        sa.Column("capabilities", sa.JSON(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("operator_labels", sa.JSON(), nullable=False),
        sa.Column("active_model_name", sa.String(), nullable=True),
        sa.Column("active_model_version", sa.String(), nullable=True),
        sa.Column("active_model_sha256", sa.String(length=64), nullable=True),
        sa.Column("active_model_variant", sa.String(length=32), nullable=False),
        sa.Column("active_model_precision", sa.String(length=8), nullable=False),
        sa.Column("previous_model_name", sa.String(), nullable=True),
        sa.Column("previous_model_version", sa.String(), nullable=True),
        sa.Column("previous_model_sha256", sa.String(length=64), nullable=True),
        sa.Column("previous_model_variant", sa.String(length=32), nullable=False),
        sa.Column("previous_model_precision", sa.String(length=8), nullable=False),
        sa.Column("applied_generation", sa.BigInteger(), nullable=False),
        sa.Column("trial", sa.JSON(), nullable=True),
        sa.Column("hardware_id", sa.String(length=64), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_fleet"), ["fleet"], unique=False)
        batch_op.create_index(
            "ix_device_fleet_active_model",
            ["fleet", "active_model_name", "active_model_version"],
            unique=False,
        )
        batch_op.create_index("ix_device_fleet_id", ["fleet", "id"], unique=False)
        batch_op.create_index("ix_device_fleet_last_seen", ["fleet", "last_seen"], unique=False)
        batch_op.create_index("ix_device_fleet_state", ["fleet", "state"], unique=False)
        batch_op.create_index(batch_op.f("ix_device_state"), ["state"], unique=False)

    op.create_table(
        "device_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("model_sha256", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "seq", name="uq_device_event_device_seq"),
    )
    with op.batch_alter_table("device_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_event_device_id"), ["device_id"], unique=False)

    op.create_table(
        "device_rollback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(length=64), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("model_sha256", sa.String(length=64), nullable=False),
        sa.Column("variant", sa.String(length=32), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("gate", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("refused", sa.Boolean(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "seq", name="uq_device_rollback_device_seq"),
    )
    with op.batch_alter_table("device_rollback", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_rollback_device_id"), ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_device_rollback_model_name"), ["model_name"], unique=False)

    op.create_table(
        "experiment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("dataset_name", sa.String(length=128), nullable=False),
        sa.Column("dataset_hash", sa.String(length=64), nullable=False),
        sa.Column("dataset_sizes", sa.JSON(), nullable=False),
        sa.Column("code_revision", sa.String(length=128), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("world_size", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id"),
    )
    with op.batch_alter_table("experiment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_experiment_dataset_hash"), ["dataset_hash"], unique=False)
        batch_op.create_index(batch_op.f("ix_experiment_name"), ["name"], unique=False)

    op.create_table(
        "firmware_image",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("hardware_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("base_version", sa.String(length=64), nullable=False),
        sa.Column("min_agent_version", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("target_path", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("payload_sha256", sa.String(length=64), nullable=False),
        sa.Column("payload_length", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "name", "hardware_id", "version", "kind", "base_version", name="uq_firmware_image"
        ),
    )
    with op.batch_alter_table("firmware_image", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_firmware_image_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_firmware_image_sha256"), ["sha256"], unique=False)

    op.create_table(
        "issued_cert",
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("fleet", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("serial"),
    )
    with op.batch_alter_table("issued_cert", schema=None) as batch_op:
        batch_op.create_index("ix_issued_cert_subject", ["fleet", "subject"], unique=False)

    op.create_table(
        "labelled_dataset",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fleet", sa.String(length=128), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("model_name", sa.String(length=64), nullable=False),
        sa.Column("class_counts", sa.JSON(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("uploaded_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fleet", "sha256", name="uq_labelled_dataset_fleet_sha256"),
    )
    with op.batch_alter_table("labelled_dataset", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_labelled_dataset_fleet"), ["fleet"], unique=False)

    op.create_table(
        "model_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "version", name="uq_model_version_name_version"),
    )
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_version_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_model_version_sha256"), ["sha256"], unique=False)

    op.create_table(
        "rollout",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("fleet", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target_name", sa.String(length=64), nullable=False),
        sa.Column("target_version", sa.String(length=64), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("stage_entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state_entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_action_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_action", sa.String(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("superseded_by", sa.String(length=32), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rollout", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rollout_fleet"), ["fleet"], unique=False)
        batch_op.create_index(batch_op.f("ix_rollout_state"), ["state"], unique=False)

    op.create_table(
        "signed_desired",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_table(
        "sketch_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "seq", name="uq_sketch_record_device_seq"),
    )
    with op.batch_alter_table("sketch_record", schema=None) as batch_op:
        batch_op.create_index("ix_sketch_record_bucket", ["window_end"], unique=False)
        batch_op.create_index("ix_sketch_record_received", ["received_at"], unique=False)

    op.create_table(
        "telemetry_window",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("p50_ms", sa.Float(), nullable=False),
        sa.Column("p95_ms", sa.Float(), nullable=False),
        sa.Column("p99_ms", sa.Float(), nullable=False),
        sa.Column("mean_ms", sa.Float(), nullable=False),
        sa.Column("max_ms", sa.Float(), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=True),
        sa.Column("rss_bytes", sa.BigInteger(), nullable=True),
        sa.Column("peak_rss_bytes", sa.BigInteger(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "seq", name="uq_telemetry_window_device_seq"),
    )
    with op.batch_alter_table("telemetry_window", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_telemetry_window_device_id"), ["device_id"], unique=False)
        batch_op.create_index("ix_telemetry_window_end", ["window_end"], unique=False)
        batch_op.create_index("ix_telemetry_window_received", ["received_at"], unique=False)

    op.create_table(
        "training_run",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("fleet", sa.String(length=128), nullable=False),
        sa.Column("model_name", sa.String(length=64), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("trigger_detail", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("datasets", sa.JSON(), nullable=False),
        sa.Column("dataset_hash", sa.String(length=64), nullable=False),
        sa.Column("champion_version", sa.String(length=64), nullable=True),
        sa.Column("challenger_version", sa.String(length=64), nullable=True),
        sa.Column("champion_metrics", sa.JSON(), nullable=False),
        sa.Column("challenger_metrics", sa.JSON(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("decision_reason", sa.String(), nullable=False),
        sa.Column("rollout_id", sa.String(length=32), nullable=True),
        sa.Column("error", sa.String(), nullable=False),
        sa.Column("transitions", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("training_run", schema=None) as batch_op:
        batch_op.create_index("ix_training_run_listing", ["fleet", "created_at", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_training_run_state"), ["state"], unique=False)
        batch_op.create_index(
            "uq_training_run_active",
            ["fleet", "model_name"],
            unique=True,
            sqlite_where=sa.text("state IN ('queued', 'running')"),
            postgresql_where=sa.text("state IN ('queued', 'running')"),
        )

    op.create_table(
        "tuf_metadata",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("role", "version", name="uq_tuf_metadata_role_version"),
    )
    with op.batch_alter_table("tuf_metadata", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tuf_metadata_role"), ["role"], unique=False)

    op.create_table(
        "tuf_rotation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("root_version", sa.BigInteger(), nullable=False),
        sa.Column("root_json", sa.LargeBinary(), nullable=False),
        sa.Column("signatures", sa.JSON(), nullable=False),
        sa.Column("new_keyids", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "tuf_target",
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("custom", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("path"),
    )
    with op.batch_alter_table("tuf_target", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tuf_target_sha256"), ["sha256"], unique=False)

    op.create_table(
        "alert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fleet", sa.String(length=128), nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=True),
        sa.Column("rule_name", sa.String(length=64), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("cohort_id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("feature", sa.String(), nullable=False),
        sa.Column("reference", sa.String(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_evaluated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("open_key", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["alert_rule.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("open_key"),
    )
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.create_index("ix_alert_fleet_state", ["fleet", "state"], unique=False)
        batch_op.create_index("ix_alert_rule", ["rule_id", "state"], unique=False)

    op.create_table(
        "desired_firmware",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("firmware_image_id", sa.Integer(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["device.id"],
        ),
        sa.ForeignKeyConstraint(
            ["firmware_image_id"],
            ["firmware_image.id"],
        ),
        sa.PrimaryKeyConstraint("device_id"),
    )
    with op.batch_alter_table("desired_firmware", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_desired_firmware_firmware_image_id"), ["firmware_image_id"], unique=False
        )

    op.create_table(
        "device_label",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["device.id"],
        ),
        sa.PrimaryKeyConstraint("device_id", "key"),
    )
    with op.batch_alter_table("device_label", schema=None) as batch_op:
        batch_op.create_index("ix_device_label_key_value", ["key", "value"], unique=False)

    op.create_table(
        "model_bundle",
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=True),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("profile_sha256", sa.String(length=64), nullable=False),
        sa.Column("profile_length", sa.BigInteger(), nullable=False),
        sa.Column("profile_media_type", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiment.id"],
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_version.id"],
        ),
        sa.PrimaryKeyConstraint("model_version_id"),
    )
    with op.batch_alter_table("model_bundle", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_bundle_experiment_id"), ["experiment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_model_bundle_profile_sha256"), ["profile_sha256"], unique=False)

    op.create_table(
        "model_variant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(length=32), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("precision", sa.String(length=8), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("runtimes", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("derived_from", sa.String(length=32), nullable=True),
        sa.Column("is_baseline", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_version.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_version_id", "variant", name="uq_model_variant_version_variant"),
    )
    with op.batch_alter_table("model_variant", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_model_variant_model_version_id"), ["model_version_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_model_variant_sha256"), ["sha256"], unique=False)

    op.create_table(
        "rollout_device",
        sa.Column("rollout_id", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("offered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("previous", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollout.id"],
        ),
        sa.PrimaryKeyConstraint("rollout_id", "device_id"),
    )
    with op.batch_alter_table("rollout_device", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rollout_device_device_id"), ["device_id"], unique=False)

    op.create_table(
        "rollout_transition",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rollout_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_state", sa.String(length=24), nullable=False),
        sa.Column("to_state", sa.String(length=24), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollout.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rollout_id", "seq", name="uq_rollout_transition_seq"),
    )
    with op.batch_alter_table("rollout_transition", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rollout_transition_rollout_id"), ["rollout_id"], unique=False)

    op.create_table(
        "ui_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_sha256", sa.String(length=64), nullable=False),
        sa.Column("csrf_sha256", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["api_token.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_sha256"),
    )
    with op.batch_alter_table("ui_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ui_session_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_ui_session_token_id"), ["token_id"], unique=False)

    op.create_table(
        "alert_notification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fleet", sa.String(length=128), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("fanned_out", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alert.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alert_notification", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_notification_alert_id"), ["alert_id"], unique=False)
        batch_op.create_index("ix_alert_notification_fan_out", ["fleet", "fanned_out"], unique=False)

    op.create_table(
        "alert_transition",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=False),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("detail", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alert.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alert_transition", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_transition_alert_id"), ["alert_id"], unique=False)

    op.create_table(
        "desired_state",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("variant_id", sa.Integer(), nullable=True),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["device.id"],
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_version.id"],
        ),
        sa.ForeignKeyConstraint(
            ["variant_id"],
            ["model_variant.id"],
        ),
        sa.PrimaryKeyConstraint("device_id"),
    )
    with op.batch_alter_table("desired_state", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_desired_state_model_version_id"), ["model_version_id"], unique=False
        )

    op.create_table(
        "alert_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fleet", sa.String(length=128), nullable=False),
        sa.Column("notification_id", sa.Integer(), nullable=False),
        sa.Column("receiver_id", sa.Integer(), nullable=True),
        sa.Column("receiver_name", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["alert_notification.id"],
        ),
        sa.ForeignKeyConstraint(
            ["receiver_id"],
            ["alert_receiver.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("notification_id", "receiver_id", name="uq_alert_delivery_receiver"),
    )
    with op.batch_alter_table("alert_delivery", schema=None) as batch_op:
        batch_op.create_index("ix_alert_delivery_due", ["fleet", "state", "next_attempt_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_alert_delivery_notification_id"), ["notification_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("alert_delivery", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_delivery_notification_id"))
        batch_op.drop_index("ix_alert_delivery_due")

    op.drop_table("alert_delivery")
    with op.batch_alter_table("desired_state", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_desired_state_model_version_id"))

    op.drop_table("desired_state")
    with op.batch_alter_table("alert_transition", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_transition_alert_id"))

    op.drop_table("alert_transition")
    with op.batch_alter_table("alert_notification", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_notification_fan_out")
        batch_op.drop_index(batch_op.f("ix_alert_notification_alert_id"))

    op.drop_table("alert_notification")
    with op.batch_alter_table("ui_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ui_session_token_id"))
        batch_op.drop_index(batch_op.f("ix_ui_session_expires_at"))

    op.drop_table("ui_session")
    with op.batch_alter_table("rollout_transition", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rollout_transition_rollout_id"))

    op.drop_table("rollout_transition")
    with op.batch_alter_table("rollout_device", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rollout_device_device_id"))

    op.drop_table("rollout_device")
    with op.batch_alter_table("model_variant", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_variant_sha256"))
        batch_op.drop_index(batch_op.f("ix_model_variant_model_version_id"))

    op.drop_table("model_variant")
    with op.batch_alter_table("model_bundle", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_bundle_profile_sha256"))
        batch_op.drop_index(batch_op.f("ix_model_bundle_experiment_id"))

    op.drop_table("model_bundle")
    with op.batch_alter_table("device_label", schema=None) as batch_op:
        batch_op.drop_index("ix_device_label_key_value")

    op.drop_table("device_label")
    with op.batch_alter_table("desired_firmware", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_desired_firmware_firmware_image_id"))

    op.drop_table("desired_firmware")
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_rule")
        batch_op.drop_index("ix_alert_fleet_state")

    op.drop_table("alert")
    with op.batch_alter_table("tuf_target", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tuf_target_sha256"))

    op.drop_table("tuf_target")
    op.drop_table("tuf_rotation")
    with op.batch_alter_table("tuf_metadata", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tuf_metadata_role"))

    op.drop_table("tuf_metadata")
    with op.batch_alter_table("training_run", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_training_run_active",
            sqlite_where=sa.text("state IN ('queued', 'running')"),
            postgresql_where=sa.text("state IN ('queued', 'running')"),
        )
        batch_op.drop_index(batch_op.f("ix_training_run_state"))
        batch_op.drop_index("ix_training_run_listing")

    op.drop_table("training_run")
    with op.batch_alter_table("telemetry_window", schema=None) as batch_op:
        batch_op.drop_index("ix_telemetry_window_received")
        batch_op.drop_index("ix_telemetry_window_end")
        batch_op.drop_index(batch_op.f("ix_telemetry_window_device_id"))

    op.drop_table("telemetry_window")
    with op.batch_alter_table("sketch_record", schema=None) as batch_op:
        batch_op.drop_index("ix_sketch_record_received")
        batch_op.drop_index("ix_sketch_record_bucket")

    op.drop_table("sketch_record")
    op.drop_table("signed_desired")
    with op.batch_alter_table("rollout", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rollout_state"))
        batch_op.drop_index(batch_op.f("ix_rollout_fleet"))

    op.drop_table("rollout")
    with op.batch_alter_table("model_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_version_sha256"))
        batch_op.drop_index(batch_op.f("ix_model_version_name"))

    op.drop_table("model_version")
    with op.batch_alter_table("labelled_dataset", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_labelled_dataset_fleet"))

    op.drop_table("labelled_dataset")
    with op.batch_alter_table("issued_cert", schema=None) as batch_op:
        batch_op.drop_index("ix_issued_cert_subject")

    op.drop_table("issued_cert")
    with op.batch_alter_table("firmware_image", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_firmware_image_sha256"))
        batch_op.drop_index(batch_op.f("ix_firmware_image_name"))

    op.drop_table("firmware_image")
    with op.batch_alter_table("experiment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_experiment_name"))
        batch_op.drop_index(batch_op.f("ix_experiment_dataset_hash"))

    op.drop_table("experiment")
    with op.batch_alter_table("device_rollback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_rollback_model_name"))
        batch_op.drop_index(batch_op.f("ix_device_rollback_device_id"))

    op.drop_table("device_rollback")
    with op.batch_alter_table("device_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_event_device_id"))

    op.drop_table("device_event")
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_state"))
        batch_op.drop_index("ix_device_fleet_state")
        batch_op.drop_index("ix_device_fleet_last_seen")
        batch_op.drop_index("ix_device_fleet_id")
        batch_op.drop_index("ix_device_fleet_active_model")
        batch_op.drop_index(batch_op.f("ix_device_fleet"))

    op.drop_table("device")
    op.drop_table("command_seq")
    with op.batch_alter_table("cohort_rollup", schema=None) as batch_op:
        batch_op.drop_index("ix_cohort_rollup_series")

    op.drop_table("cohort_rollup")
    with op.batch_alter_table("cohort_metric", schema=None) as batch_op:
        batch_op.drop_index("ix_cohort_metric_series")

    op.drop_table("cohort_metric")
    with op.batch_alter_table("cohort", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cohort_fleet"))

    op.drop_table("cohort")
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_entry_object")
        batch_op.drop_index("ix_audit_entry_at")
        batch_op.drop_index("ix_audit_entry_actor")

    op.drop_table("audit_entry")
    op.drop_table("api_token")
    with op.batch_alter_table("alert_rule", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_rule_fleet"))

    op.drop_table("alert_rule")
    with op.batch_alter_table("alert_receiver", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_receiver_fleet"))

    op.drop_table("alert_receiver")

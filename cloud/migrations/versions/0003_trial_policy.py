"""Trial policies: the one an assignment sets, and the one that judged each device's last trial.

``desired_state.trial_policy`` holds an override set on an assignment or by a rollout's plan
(NULL: the bundle's default applies). On ``device``, the policy's source and digest and the last
model load (time, memory) come from each status. Existing devices get the values of a device that
never reported them ("" and 0); the server defaults that fill them are dropped again, so a migrated
table is the one ``create_all`` makes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_DEVICE_COLUMNS = (
    ("trial_policy_source", sa.String(length=16), ""),
    ("trial_policy_digest", sa.String(length=64), ""),
    ("last_load_ms", sa.Float(), "0"),
    ("session_memory_bytes", sa.BigInteger(), "0"),
)


def upgrade() -> None:
    with op.batch_alter_table("desired_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trial_policy", sa.JSON(), nullable=True))
    with op.batch_alter_table("device", schema=None) as batch_op:
        for name, type_, default in _DEVICE_COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=False, server_default=default))
    with op.batch_alter_table("device", schema=None) as batch_op:
        for name, _type, _default in _DEVICE_COLUMNS:
            batch_op.alter_column(name, server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("device", schema=None) as batch_op:
        for name, _type, _default in reversed(_DEVICE_COLUMNS):
            batch_op.drop_column(name)
    with op.batch_alter_table("desired_state", schema=None) as batch_op:
        batch_op.drop_column("trial_policy")

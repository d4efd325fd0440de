"""Device status: firmware, trusted root and outgoing queue, as each status reports them.

Existing rows get the values a device that never reported them has ("" and 0); the server
defaults that fill them are dropped again, so a migrated table is the one ``create_all`` makes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = (
    ("firmware_version", sa.String(length=64), ""),
    ("firmware_slot", sa.String(length=8), ""),
    ("trusted_root_version", sa.BigInteger(), "0"),
    ("queued_messages", sa.BigInteger(), "0"),
    ("dropped_messages", sa.BigInteger(), "0"),
)


def upgrade() -> None:
    with op.batch_alter_table("device", schema=None) as batch_op:
        for name, type_, default in _COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=False, server_default=default))
    with op.batch_alter_table("device", schema=None) as batch_op:
        for name, _type, _default in _COLUMNS:
            batch_op.alter_column(name, server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("device", schema=None) as batch_op:
        for name, _type, _default in reversed(_COLUMNS):
            batch_op.drop_column(name)

"""Alembic's entry point for the hub: runs on a connection that cloud.migrations hands it.

There is no alembic.ini and no URL here: ``cloud.migrations.runner`` builds the configuration
in code (so it works from an installed package) and passes an open connection in
``config.attributes["connection"]``, inside the transaction (and, on PostgreSQL, the advisory
lock) it holds.
"""

from __future__ import annotations

from alembic import context

from cloud.migrations.schema import hub_metadata, include_name, render_item

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "cloud.migrations runs on a connection given by cloud.migrations.runner; "
        "use `fleet db upgrade` rather than the alembic command"
    )

context.configure(
    connection=connection,
    target_metadata=hub_metadata(),
    include_name=include_name,
    render_item=render_item,
    compare_type=True,
    # SQLite cannot ALTER most of a table: later revisions copy it to a new one, in a batch.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()

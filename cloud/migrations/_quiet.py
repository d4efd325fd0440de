"""Keep Alembic's chatter out of the hub's log; installed before Alembic is imported (see __init__).

Alembic logs, at INFO, each plugin it loads when imported and the dialect it drives each time it
looks at a database: on every hub start and on every database a test builds. Kept: the lines that
say a migration ran.
"""

from __future__ import annotations

import logging

_CHATTER = ("Context impl", "Will assume", "setup plugin")


def _not_chatter(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_CHATTER)


for _name in ("alembic.runtime.migration", "alembic.runtime.plugins"):
    logging.getLogger(_name).addFilter(_not_chatter)

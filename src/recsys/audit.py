"""The audit line: one log line on the `recsys.audit` logger for each erasure, promotion
and rollback, saying who did what to which model versions, never whom it concerned."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, Literal

from recsys.logs import FIELDS

log = logging.getLogger("recsys.audit")

Action = Literal["erase", "promote", "rollback"]
# The actor of an action taken by a command on the host (the CLI, the batch): no key.
LOCAL: Final = "local"
# A value of the line: a name, a version or a count, never a customer id or a purchase.
Value = str | int | None


class AuditEntry:
    """What an action fills in while it runs; written once, when it ends."""

    def __init__(self, action: Action, actor: str, **fields: Value) -> None:
        self.action = action
        self.actor = actor
        self.fields: dict[str, Value] = dict(fields)

    def add(self, **fields: Value) -> None:
        self.fields.update(fields)


@contextmanager
def audited(action: Action, actor: str = LOCAL, **fields: Value) -> Iterator[AuditEntry]:
    """Write one audit line when the block ends: `outcome=done`, or `outcome=failed` with
    the exception's type (its message may name a customer, so it is left out)."""
    entry = AuditEntry(action, actor, **fields)
    try:
        yield entry
    except BaseException as exc:
        _write(entry, "failed", error=type(exc).__name__)
        raise
    _write(entry, "done")


def _write(entry: AuditEntry, outcome: str, **more: Value) -> None:
    line: dict[str, Value] = {
        "action": entry.action,
        "actor": entry.actor,
        "outcome": outcome,
        **entry.fields,
        **more,
    }
    text = " ".join(f"{key}={value}" for key, value in line.items() if value is not None)
    log.info("%s", text, extra={FIELDS: line})

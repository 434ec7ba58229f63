"""The audit line itself, without engines: one line per action, `local` for a command on
the host, the outcome, and an error named by its type only (its message may name a
customer)."""

from __future__ import annotations

import json
import logging
from typing import cast

import pytest

from recsys.audit import LOCAL, audited
from recsys.logs import JsonFormatter
from recsys.settings import Settings
from recsys.user_store import UserStore
from recsys.versions import VersionError, rollback


def _audit_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "recsys.audit"]


def test_a_failed_action_writes_one_line_with_the_errors_type_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="recsys.audit")

    def erase() -> None:
        with audited("erase", "ops") as entry:
            entry.add(redis_keys=4)
            raise ValueError("not a valid customer id: 'c-secret'")

    with pytest.raises(ValueError, match="c-secret"):
        erase()
    (line,) = _audit_lines(caplog)
    expected = "action=erase actor=ops outcome=failed redis_keys=4 error=ValueError"
    assert line.getMessage() == expected
    assert "c-secret" not in json.dumps(json.loads(JsonFormatter().format(line)))


class _NoHistory:
    """The two calls a rollback makes before it finds nothing to roll back to."""

    def live_version(self) -> str:
        return "v7"

    def pop_previous(self) -> None:
        return None


def test_a_rollback_from_the_command_line_is_audited_as_local(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="recsys.audit")
    with pytest.raises(VersionError):
        rollback(Settings(), cast(UserStore, _NoHistory()))
    (line,) = _audit_lines(caplog)
    assert line.getMessage() == (
        f"action=rollback actor={LOCAL} outcome=failed previous=v7 error=VersionError"
    )
    entry = json.loads(JsonFormatter().format(line))
    assert (entry["action"], entry["actor"], entry["previous"]) == ("rollback", LOCAL, "v7")

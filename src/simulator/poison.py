"""Bad messages put straight onto the events topic (not through the API, which refuses
them): the soak mixes a share of them into its load and checks that none stopped a
worker, none was applied or archived, and each delivered one was dead-lettered.

Each message carries a token (`soak-bad-<12 hex>`), in its customer id where that is the
valid part, so a watch on either topic can tell which it has seen.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from confluent_kafka import KafkaError, Message

from recsys.bus import EventBus
from recsys.ids import MAX_ID_LENGTH

log = logging.getLogger(__name__)

TOKEN: Final = re.compile(rb"soak-bad-[0-9a-f]{12}")


def _event(token: str, **fields: object) -> bytes:
    base: dict[str, object] = {"event_id": token, "customer_id": token, "article_id": "a1"}
    return json.dumps({**base, **fields}).encode()


# (kind, the message for a token): every way a message can fail the event rule.
KINDS: Final[tuple[tuple[str, Callable[[str], bytes]], ...]] = (
    ("year 1", lambda t: _event(t, ts="0001-01-01T00:00:00")),
    ("year 9999", lambda t: _event(t, ts="9999-12-31T23:59:59")),
    ("year 1 at +14:00", lambda t: _event(t, ts="0001-01-01T00:00:00+14:00")),
    ("price 1e308", lambda t: _event(t, price=1e308)),
    ("price NaN", lambda t: _event(t).replace(b"}", b', "price": NaN}')),
    ("id with a newline", lambda t: _event(t, customer_id=t + "\n")),
    ("id of 129 characters", lambda t: _event(t, customer_id=t.ljust(MAX_ID_LENGTH + 1, "x"))),
    ("not JSON", lambda t: b"\xff\xfe " + t.encode()),
    ("schema version 2", lambda t: _event(t, schema_version=2)),
    ("unknown field", lambda t: _event(t, coupon="FREE")),
)


@dataclass
class PoisonReport:
    sent: Counter[str] = field(default_factory=Counter)  # kind -> acknowledged by the broker
    tokens: dict[str, str] = field(default_factory=dict)  # token -> kind

    def to_dict(self) -> dict[str, object]:
        return {"sent": dict(self.sent), "total": sum(self.sent.values())}


class PoisonFeed:
    """A thread producing one bad message every 1/rate s, the kinds in turn."""

    def __init__(self, bus: EventBus, topic: str, rate_per_s: float) -> None:
        self.topic = topic
        self.interval_s = 1.0 / rate_per_s
        self.report = PoisonReport()
        self._lock = threading.Lock()
        # Not idempotent: such a producer never recovers from the embedded broker's
        # restart (it forgets producer ids), and the soak restarts it.
        self._producer = bus.producer(
            **{"enable.idempotence": False, "linger.ms": 5, "message.timeout.ms": 10_000}
        )
        self._stop = threading.Event()
        self._open = threading.Event()
        self._open.set()
        self._thread = threading.Thread(target=self._run, name="soak-poison", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def pause(self) -> None:
        """Send nothing until `resume` (the soak holds its load so a broker restart loses
        nothing acknowledged; this is load too)."""
        self._open.clear()
        self._producer.flush(15)

    def resume(self) -> None:
        self._open.set()

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.interval_s):
            if not self._open.is_set():
                continue
            kind, make = KINDS[n % len(KINDS)]
            n += 1
            token = f"soak-bad-{uuid.uuid4().hex[:12]}"
            self._producer.produce(self.topic, key=token.encode(), value=make(token),
                                   on_delivery=self._delivered(kind, token))  # fmt: skip
            self._producer.poll(0)
        self._producer.flush(15)

    def _delivered(self, kind: str, token: str) -> Callable[[KafkaError | None, Message], None]:
        def done(err: KafkaError | None, _message: Message) -> None:
            if err is None:  # a broker that was down: not on the topic, not counted
                with self._lock:
                    self.report.sent[kind] += 1
                    self.report.tokens[token] = kind

        return done

    def stop(self) -> PoisonReport:
        self._stop.set()
        self._thread.join(30)
        return self.report

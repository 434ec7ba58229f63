"""`recsys dead-letters`: a user lists the dead letters with their reasons and sends
chosen ones back, fixed in a file or as they were once the fault elsewhere is fixed;
the stream applies them once, and nothing is sent back twice by mistake."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import redis
from confluent_kafka import Producer
from typer.testing import CliRunner

from batch.pipeline import BatchReport
from recsys import keys
from recsys.bus import KafkaBus, ensure_topics, producer_config
from recsys.events import Event
from recsys.settings import Settings
from recsys_cli.main import app
from stream.dead_letters import fixes_from_lines, read_dead_letters
from support import own_stream, running_updater, wait_for


@dataclass
class Running:
    settings: Settings
    env: dict[str, str]
    producer: Producer

    def send(self, value: bytes, key: bytes) -> None:
        self.producer.produce(self.settings.events_topic, key=key, value=value)
        assert self.producer.flush(10) == 0

    def recsys(self, *args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["dead-letters", *args], env=self.env)
        return result.exit_code, result.output


@pytest.fixture
def running(
    settings: Settings, redis_conn: redis.Redis, trained: BatchReport, tmp_path: Path
) -> Iterator[Running]:
    bootstrap = str(settings.kafka_bootstrap_servers)
    own = own_stream(settings, tmp_path / "data")
    ensure_topics(bootstrap, own)
    env = {
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "RECSYS_EVENTS_TOPIC": own.events_topic,
        "RECSYS_DLQ_TOPIC": own.dlq_topic,
        "RECSYS_DATA_DIR": str(own.data_dir),
    }
    with running_updater(own, redis_conn):
        yield Running(own, env, Producer(producer_config(bootstrap, own)))


@pytest.fixture
def article(trained: BatchReport, transactions: pd.DataFrame) -> str:
    """An article the live model knows, so an applied purchase moves the vector."""
    return str(transactions["article_id"].iloc[0])


def _letters(running: Running, count: int) -> list[dict[str, object]]:
    bootstrap = str(running.settings.kafka_bootstrap_servers)
    wait_for(
        lambda: (
            len(read_dead_letters(KafkaBus(bootstrap, running.settings), running.settings)) >= count
        ),
        timeout=30,
    )
    return [
        x.as_json()
        for x in read_dead_letters(KafkaBus(bootstrap, running.settings), running.settings)
    ]


def test_a_fixed_dead_letter_is_sent_back_and_applied_once(
    running: Running, redis_conn: redis.Redis, trained: BatchReport, tmp_path: Path,
    article: str,
) -> None:  # fmt: skip
    customer = f"dl-{uuid.uuid4().hex[:8]}"
    event_id = f"e-{uuid.uuid4().hex[:8]}"
    year_one = {"event_id": event_id, "customer_id": customer, "article_id": article,
                "ts": "0001-01-01T00:00:00"}  # fmt: skip
    running.send(json.dumps(year_one).encode(), customer.encode())
    running.send(b"\xff not json", customer.encode())  # one partition: read in this order
    letters = _letters(running, 2)
    assert [x["event"] if "event" in x else x["raw"] for x in letters] == [
        year_one, "\ufffd not json"
    ]  # fmt: skip

    code, out = running.recsys("list")
    assert code == 0, out
    assert "2 dead letters" in out and "ts:" in out

    # The user writes the list out, fixes the time of the first, and sends both back:
    # the fixed one goes, the one that is still not an event is named and stays.
    listed = tmp_path / "dead.jsonl"
    assert running.recsys("list", "--json", str(listed))[0] == 0
    lines = [json.loads(line) for line in listed.read_text().splitlines()]
    lines[0]["event"]["ts"] = datetime.now(UTC).isoformat()
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, out = running.recsys("resend", "--file", str(fixed))
    assert code == 1
    assert f"sent back: {lines[0]['ref']}" in out
    assert f"not sent: {lines[1]['ref']}: still not valid" in out

    vector = keys.user_vector(trained.version, customer)
    wait_for(lambda: redis_conn.get(keys.last_event(customer)) == event_id.encode(), timeout=30)
    assert redis_conn.exists(vector)
    assert redis_conn.hget(keys.profile(trained.version, customer), "purchases") == b"1"

    # It is done: the list no longer shows it (but --all does), and it is not sent twice.
    code, out = running.recsys("list")
    assert "1 dead letters" in out and lines[1]["ref"] in out
    assert "(sent back)" in running.recsys("list", "--all")[1]
    code, out = running.recsys("resend", "--file", str(fixed))
    assert code == 1 and "sent back before" in out


@pytest.mark.parametrize("wrong", ["vector", "history", "profile"])
def test_a_dead_letter_whose_fault_was_elsewhere_goes_back_as_it_was(
    running: Running, redis_conn: redis.Redis, trained: BatchReport, article: str, wrong: str
) -> None:
    """Redis refused the event (one of the customer's keys of another type) before
    writing anything: fixed in Redis, the letter goes back unchanged by its offset and is
    applied in full."""
    customer = f"dl-{uuid.uuid4().hex[:8]}"
    vector = keys.user_vector(trained.version, customer)
    profile = keys.profile(trained.version, customer)
    broken = {"vector": vector, "history": keys.history(customer), "profile": profile}[wrong]
    redis_conn.rpush(broken, "not what the updater expects")
    event = Event(customer_id=customer, article_id=article)
    running.send(event.to_bytes(), customer.encode())
    (letter,) = _letters(running, 1)
    assert "WRONGTYPE" in str(letter["reason"])
    assert not redis_conn.exists(keys.last_event(customer))  # nothing was written
    redis_conn.delete(broken)

    code, out = running.recsys("resend", str(letter["ref"]), "no-such-offset")
    assert code == 2 and "not a dead letter's offset" in out
    code, out = running.recsys("resend", str(letter["ref"]))
    assert code == 0, out
    wait_for(lambda: redis_conn.exists(vector) == 1, timeout=30)
    assert redis_conn.get(keys.last_event(customer)) == event.event_id.encode()
    assert redis_conn.hget(profile, "purchases") == b"1"
    assert redis_conn.zcard(keys.history(customer)) == 1


def test_a_file_that_is_not_dead_letter_lines_is_named() -> None:
    with pytest.raises(ValueError, match="line 2"):
        fixes_from_lines(['{"ref": "3", "event": {}}', "not json"])
    with pytest.raises(ValueError, match="line 1"):
        fixes_from_lines(['{"ref": "x:y", "raw": "b"}'])

"""Views, clicks and add-to-carts beside purchases: the envelope still reads old purchase
messages; the atomic apply step moves the vector by each type's weight, once per event,
and keeps only purchases as history; promotion replays the weaker signals too."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import redis
from pydantic import ValidationError

from batch.pipeline import BatchReport
from recsys import keys
from recsys.apply import EventApplier
from recsys.ema import ema_update
from recsys.events import EVENT_TYPES, Event, event_weights
from recsys.replay import unseen_purchases
from recsys.settings import Settings
from recsys.vectors import Vector, decode, encode
from stream.events_table import EVENTS_SCHEMA, append_new, ensure_events_table
from support import apply_live

# ---------------------------------------------------------------- the envelope


def test_old_purchase_messages_still_parse() -> None:
    # As the API wrote them before the weaker types existed, and one without a type.
    written = (
        b'{"schema_version":1,"event_id":"e-old","event_type":"purchase","customer_id":"c1",'
        b'"article_id":"0108775015","ts":"2024-03-01T10:00:00Z","price":0.02}'
    )
    untyped = b'{"event_id":"e-old2","customer_id":"c1","article_id":"0108775015"}'
    for raw in (written, untyped):
        event = Event.from_bytes(raw)
        assert event.event_type == "purchase" and event.is_purchase
        assert event.schema_version == 1
    assert Event.from_bytes(written).ts == datetime(2024, 3, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize("event_type", ["view", "click", "add_to_cart"])
def test_weaker_types_round_trip_and_are_not_purchases(event_type: str) -> None:
    event = Event.model_validate(
        {"event_type": event_type, "customer_id": "c1", "article_id": "0108775015"}
    )
    again = Event.from_bytes(event.to_bytes())
    assert again == event and not again.is_purchase


def test_an_unknown_type_is_invalid() -> None:
    with pytest.raises(ValidationError, match="event_type"):
        Event.from_bytes(b'{"event_type":"wishlist","customer_id":"c1","article_id":"a1"}')


def test_weights_come_from_the_settings_and_a_purchase_is_one() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        event_weight_view=0.0,
        event_weight_click=0.25,
        event_weight_add_to_cart=1.0,
    )
    assert event_weights(settings) == {
        "purchase": 1.0,
        "view": 0.0,
        "click": 0.25,
        "add_to_cart": 1.0,
    }
    assert set(event_weights(settings)) == set(EVENT_TYPES)
    with pytest.raises(ValidationError):
        Settings(_env_file=None, event_weight_view=1.5)  # type: ignore[call-arg]


# ---------------------------------------------------------------- the apply step


def _articles(client: redis.Redis, version: str, n: int) -> list[tuple[str, Vector]]:
    """n articles of the version with their item vectors."""
    found: list[tuple[str, Vector]] = []
    for raw_key in client.scan_iter(match=keys.item_vector(version, "*"), count=500):
        key = raw_key.decode()
        vector = decode(client.get(key))
        if vector is not None:
            found.append((key.rsplit(":", 1)[1], vector))
        if len(found) == n:
            return found
    raise AssertionError(f"fewer than {n} item vectors in version {version}")


def _event(customer: str, article: str, event_type: str, minute: int) -> Event:
    ts = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=minute)
    return Event.model_validate(
        {
            "event_id": f"evt-{uuid.uuid4().hex}",
            "event_type": event_type,
            "customer_id": customer,
            "article_id": article,
            "ts": ts,
        }
    )


def test_each_type_moves_the_vector_once_by_its_weight_and_only_purchases_are_history(
    settings: Settings, trained: BatchReport, redis_conn: redis.Redis
) -> None:
    version = trained.version
    customer = f"weak-{uuid.uuid4().hex[:12]}"
    (view, v_vec), (click, c_vec), (cart, a_vec), (bought, p_vec) = _articles(
        redis_conn, version, 4
    )
    start = np.full(len(v_vec), 0.1, dtype=np.float32)
    start[0] = 1.0
    redis_conn.set(keys.user_vector(version, customer), encode(start))
    events = [
        _event(customer, view, "view", 0),
        _event(customer, click, "click", 1),
        _event(customer, cart, "add_to_cart", 2),
        _event(customer, bought, "purchase", 3),
    ]
    applier = EventApplier(settings, redis_conn)
    assert apply_live(applier, version, events) == (4, 0)

    weights = event_weights(settings)
    expected: Vector = start
    for event, item in zip(events, (v_vec, c_vec, a_vec, p_vec), strict=True):
        expected = ema_update(expected, item, settings.ema_rate, 1.0, weights[event.event_type])
    after = decode(redis_conn.get(keys.user_vector(version, customer)))
    assert after is not None
    np.testing.assert_allclose(after, expected, rtol=1e-5)
    # The weaker signals really moved it: purchases alone end elsewhere.
    alone = ema_update(start, p_vec, settings.ema_rate, 1.0)
    assert not np.allclose(after, alone)

    # History and profile counts hold the purchase only; the last event is the last one.
    assert redis_conn.zrange(keys.history(customer), 0, -1) == [bought.encode()]
    profile = redis_conn.hgetall(keys.profile(version, customer))
    assert profile[b"purchases"] == b"1"
    assert int(profile[b"first_ts"]) == int(events[3].ts.timestamp())
    assert redis_conn.get(keys.last_event(customer)) == events[3].event_id.encode()
    # Both expire after the retention, counted from this write.
    ttl = settings.customer_state_ttl_s
    for key in (keys.history(customer), keys.last_event(customer)):
        assert ttl - 60 < redis_conn.ttl(key) <= ttl

    # Delivered again (a redelivery after a crash): nothing moves twice.
    assert apply_live(applier, version, events) == (0, 4)
    np.testing.assert_array_equal(decode(redis_conn.get(keys.user_vector(version, customer))),
                                  after)  # fmt: skip
    assert redis_conn.hget(keys.profile(version, customer), "purchases") == b"1"


def test_weak_events_alone_touch_no_history_and_set_the_last_event(
    settings: Settings, trained: BatchReport, redis_conn: redis.Redis
) -> None:
    version = trained.version
    customer = f"weak-{uuid.uuid4().hex[:12]}"
    ((article, item),) = _articles(redis_conn, version, 1)
    event = _event(customer, article, "add_to_cart", 0)
    assert apply_live(EventApplier(settings, redis_conn), version, [event]) == (1, 0)
    # A customer with no vector gets one from a weak event of positive weight: the
    # item's direction at the model's median user norm, as from a first purchase.
    vector = decode(redis_conn.get(keys.user_vector(version, customer)))
    assert vector is not None
    cos = float(vector @ item / (np.linalg.norm(vector) * np.linalg.norm(item)))
    assert cos == pytest.approx(1.0, abs=1e-5)
    assert redis_conn.exists(keys.history(customer)) == 0
    assert redis_conn.exists(keys.profile(version, customer)) == 0
    assert redis_conn.get(keys.last_event(customer)) == event.event_id.encode()


def test_a_retention_of_zero_keeps_the_customers_state(
    settings: Settings, trained: BatchReport, redis_conn: redis.Redis
) -> None:
    customer = f"kept-{uuid.uuid4().hex[:12]}"
    ((article, _),) = _articles(redis_conn, trained.version, 1)
    forever = settings.model_copy(update={"customer_state_retention_days": 0.0})
    event = _event(customer, article, "purchase", 0)
    assert apply_live(EventApplier(forever, redis_conn), trained.version, [event]) == (1, 0)
    assert redis_conn.ttl(keys.history(customer)) == -1
    assert redis_conn.ttl(keys.last_event(customer)) == -1


def test_a_weight_of_zero_leaves_the_vector_but_counts_the_event_applied(
    settings: Settings, trained: BatchReport, redis_conn: redis.Redis
) -> None:
    version = trained.version
    ignoring = settings.model_copy(update={"event_weight_view": 0.0})
    applier = EventApplier(ignoring, redis_conn)
    ((article, item),) = _articles(redis_conn, version, 1)

    known = f"weak-{uuid.uuid4().hex[:12]}"
    start = np.linspace(0.1, 1.0, len(item), dtype=np.float32)
    redis_conn.set(keys.user_vector(version, known), encode(start))
    seen = _event(known, article, "view", 0)
    assert apply_live(applier, version, [seen]) == (1, 0)
    np.testing.assert_array_equal(decode(redis_conn.get(keys.user_vector(version, known))),
                                  start)  # fmt: skip
    assert redis_conn.get(keys.last_event(known)) == seen.event_id.encode()
    assert apply_live(applier, version, [seen]) == (0, 1)  # remembered: a duplicate from now on

    # A customer with no vector gets none from it.
    nobody = f"weak-{uuid.uuid4().hex[:12]}"
    assert apply_live(applier, version, [_event(nobody, article, "view", 0)]) == (1, 0)
    assert redis_conn.get(keys.user_vector(version, nobody)) is None
    assert redis_conn.exists(keys.history(nobody)) == 0


# ---------------------------------------------------------------- promotion replay


def test_promotion_replays_the_weaker_signals_too(tmp_path: Path) -> None:
    path = tmp_path / "events"
    ensure_events_table(path)
    rows = [
        {**_event("c1", "0108775001", kind, i).model_dump(), "kafka_partition": 0,
         "kafka_offset": i}
        for i, kind in enumerate(("view", "purchase", "click", "add_to_cart"))
    ]  # fmt: skip
    append_new(path, pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA))
    unseen = unseen_purchases(path, None, datetime(2000, 1, 1, tzinfo=UTC))
    assert unseen["event_type"].tolist() == ["view", "purchase", "click", "add_to_cart"]
    assert isinstance(unseen, pd.DataFrame)

"""Several updaters and archivers in their consumer groups over many partitions: a
rebalance commits what each finished before its partitions go, and a member killed
mid-stream loses and doubles nothing (the survivors take its partitions; the markers
skip what it had applied but not committed, the merge what it had archived)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from deltalake import DeltaTable

from batch.pipeline import BatchReport
from recsys import keys
from recsys.bus import KafkaBus, pending_events, producer_config
from recsys.engines.process import free_port, recsys_command
from recsys.events import Event
from recsys.settings import Settings
from recsys.vectors import decode
from stream.archiver import Archiver
from stream.offsets import FinishedOffsets
from stream.updater import Updater
from support import assert_ema_chain, counter, new_topic, own_stream, wait_for


def _events(run: str, customers: list[str], articles: list[str], total: int) -> list[Event]:
    return [
        Event(event_id=f"{run}-{i}", customer_id=customers[i % len(customers)],
              article_id=articles[(i * 7) % len(articles)])
        for i in range(total)
    ]  # fmt: skip


def _produce(producer: Producer, topic: str, events: list[Event]) -> None:
    for event in events:
        producer.produce(topic, key=event.customer_id.encode(), value=event.to_bytes())
    assert producer.flush(10) == 0


def _applied(client: redis.Redis, version: str, customers: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for customer in customers:
        pipe.hget(keys.profile(version, customer), "purchases")
    return sum(int(v or 0) for v in pipe.execute())


def _archived(path: Path) -> list[str]:
    if not (path / "_delta_log").exists():
        return []
    ids: list[str] = DeltaTable(str(path)).to_pandas(columns=["event_id"])["event_id"].tolist()
    return ids


def test_finished_offsets_are_committed_on_revoke_and_forgotten_when_lost(
    settings: Settings,
) -> None:
    """The revoke's commit waits for the broker (the partition's next owner starts after
    it); a lost partition is only forgotten (its new owner commits it)."""
    own = settings.model_copy(update={"events_topic": new_topic(settings, partitions=1)})
    bus = KafkaBus(str(settings.kafka_bootstrap_servers), own)
    _produce(bus.producer(), own.events_topic,
             _events("fin", ["c1"], ["0108775001"], 5))  # fmt: skip
    consumer = bus.consumer(f"fin-{own.events_topic}")
    partition = TopicPartition(own.events_topic, 0)
    try:
        consumer.assign([TopicPartition(own.events_topic, 0, 0)])
        messages = []
        deadline = time.monotonic() + 10
        while len(messages) < 5 and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(10, 0.2) if m.error() is None]
        finished = FinishedOffsets()
        finished.commit(consumer, messages[:3], asynchronous=True)
        finished.revoked(consumer, [partition])
        assert consumer.committed([partition], timeout=10)[0].offset == 3
        finished.commit(consumer, messages[3:], asynchronous=False)
        assert finished.forget([partition]) == {(own.events_topic, 0): 5}
        finished.revoked(consumer, [partition])  # nothing left to commit
        assert consumer.committed([partition], timeout=10)[0].offset == 5
    finally:
        consumer.close()


def test_a_rebalance_commits_what_each_worker_finished_before_its_partitions_go(
    settings: Settings, redis_conn: redis.Redis, trained: BatchReport, tmp_path: Path,
    transactions: pd.DataFrame,
) -> None:  # fmt: skip
    """An updater and an archiver (flushing only every minute) own both partitions of a
    topic; a second member joins each group. The revoke commits the updater's applied
    offsets and makes the archiver write what it held, so the newcomers read nothing
    again and the table has every event long before the archiver's next flush."""
    own = own_stream(settings, tmp_path / "data").model_copy(
        update={"archiver_flush_interval_s": 60.0, "archiver_batch_size": 100_000}
    )
    bus = KafkaBus(str(settings.kafka_bootstrap_servers), own)
    run = uuid.uuid4().hex[:8]
    customers = [f"rev-{run}-{i}" for i in range(10)]
    articles = [str(a) for a in transactions["article_id"].drop_duplicates().head(10)]
    events = _events(f"rev-{run}", customers, articles, 200)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(group: str, make: Callable[[Consumer], Updater | Archiver]) -> Updater | Archiver:
        """The worker in a thread, as `recsys updater` or `recsys archiver` runs it."""
        consumer = bus.consumer(group)
        worker = make(consumer)
        consumer.subscribe([own.events_topic], on_revoke=worker.partitions_revoked,
                           on_lost=worker.partitions_lost)  # fmt: skip

        def run() -> None:
            try:
                worker.run(stop)
            finally:
                consumer.close()

        threads.append(threading.Thread(target=run, daemon=True))
        threads[-1].start()
        return worker

    try:
        start(own.updater_group, lambda c: Updater(own, redis_conn, c, bus.producer()))
        archiver = start(own.archiver_group, lambda c: Archiver(own, c))
        assert isinstance(archiver, Archiver)
        _produce(bus.producer(), own.events_topic, events)
        wait_for(lambda: _applied(redis_conn, trained.version, customers) == len(events))
        wait_for(lambda: len(archiver._pending) == len(events))
        assert _archived(own.events_table) == []  # held for the minute's flush

        # A newcomer in each group: the rebalance revokes the workers' partitions.
        redelivered: list[int] = []
        joined: list[bool] = []
        newcomers = [bus.consumer(group) for group in (own.updater_group, own.archiver_group)]
        for newcomer in newcomers:
            newcomer.subscribe([own.events_topic], on_assign=lambda _c, p: joined.append(bool(p)))
        deadline = time.monotonic() + 30
        while (len(joined) < 2 or not all(joined)) and time.monotonic() < deadline:
            for newcomer in newcomers:
                redelivered += [1 for m in newcomer.consume(100, 0.2) if m.error() is None]
        assert len(joined) >= 2 and all(joined), "the newcomers were given no partitions"
        for _ in range(3):  # a moment more of reading what the workers left
            for newcomer in newcomers:
                redelivered += [1 for m in newcomer.consume(100, 0.1) if m.error() is None]
        for newcomer in newcomers:
            newcomer.close()
        assert sorted(_archived(own.events_table)) == sorted(e.event_id for e in events)
        assert not redelivered, f"{len(redelivered)} messages read again after the rebalance"
        assert bus.pending(own.events_topic, own.updater_group) == 0
        assert bus.pending(own.events_topic, own.archiver_group) == 0
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)


def _worker(
    command: str, env: dict[str, str], log: Path, metrics_port: int
) -> subprocess.Popen[bytes]:
    port = {f"RECSYS_{command.upper()}_METRICS_PORT": str(metrics_port)}
    with log.open("ab") as out:
        return subprocess.Popen(recsys_command(command), env={**os.environ, **env, **port},
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip


def _assigned(log: Path) -> int:
    """The partitions of the worker's latest assignment (its log says each)."""
    found = re.findall(r"partitions assigned: (\d+)", log.read_text(errors="replace"))
    return int(found[-1]) if found else 0


def _metric(port: int, name: str, **labels: str) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    return counter(text, name, **labels)


def test_three_updaters_and_two_archivers_lose_and_double_nothing_when_one_of_each_is_killed(
    settings: Settings, redis_conn: redis.Redis, trained: BatchReport, tmp_path: Path,
    transactions: pd.DataFrame,
) -> None:  # fmt: skip
    """Six partitions, `recsys updater` three times and `recsys archiver` twice, each in
    its group; mid-stream one of each is killed (SIGKILL: no revoke, no commit). The
    survivors take its partitions after its session times out, and every event is
    applied to its customer once, in order, and archived once."""
    bootstrap = str(settings.kafka_bootstrap_servers)
    topic = new_topic(settings, partitions=6)
    version = trained.version
    run = uuid.uuid4().hex[:8]
    customers = [f"grp-{run}-{i}" for i in range(30)]
    articles = [str(a) for a in transactions["article_id"].drop_duplicates().head(40)]
    total = 3_000
    events = _events(f"g{run}", customers, articles, total)
    lake = tmp_path / "data"
    table = Settings(_env_file=None, data_dir=lake).events_table  # type: ignore[call-arg]
    env = {
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "RECSYS_EVENTS_TOPIC": topic,
        "RECSYS_DLQ_TOPIC": f"{topic}.dlq",
        "RECSYS_CATALOG_TOPIC": f"{topic}.catalog",  # made compacted by the first worker
        "RECSYS_UPDATER_GROUP": f"upd-{topic}",
        "RECSYS_ARCHIVER_GROUP": f"arch-{topic}",
        "RECSYS_UPDATER_BATCH_SIZE": "100",
        "RECSYS_ARCHIVER_BATCH_SIZE": "100",
        "RECSYS_ARCHIVER_FLUSH_INTERVAL_S": "0.2",
    }
    updater_env = {**env, "RECSYS_DATA_DIR": str(settings.data_dir),
                   "RECSYS_REDIS_URL": settings.redis_url or ""}  # fmt: skip
    archiver_env = {**env, "RECSYS_DATA_DIR": str(lake)}
    ports = [free_port() for _ in range(5)]
    logs = [tmp_path / f"{name}.log" for name in ("u0", "u1", "u2", "a0", "a1")]
    procs = [_worker("updater", updater_env, logs[n], ports[n]) for n in range(3)]
    procs += [_worker("archiver", archiver_env, logs[n], ports[n]) for n in range(3, 5)]
    killed = threading.Event()
    producer = Producer(producer_config(bootstrap, settings))

    def produce() -> None:
        # A steady stream; the last third waits for the kills, so they land mid-stream
        # however fast or slow the machine is.
        for start in range(0, total, 50):
            if start == 2 * total // 3:
                killed.wait(120)
            _produce(producer, topic, events[start : start + 50])
            time.sleep(0.1)

    feeder = threading.Thread(target=produce)
    started = time.monotonic()
    timings: dict[str, float] = {}
    try:
        # Every member in: each updater owns two of the six partitions, each archiver
        # three (and one of them the catalog's one).
        def settled() -> bool:
            upd, arch = [_assigned(log) for log in logs[:3]], [_assigned(log) for log in logs[3:]]
            return all(upd) and sum(upd) == 6 and all(arch) and sum(arch) == 7

        wait_for(settled, timeout=60)
        timings["joined"] = time.monotonic() - started
        feeder.start()
        victim_updater, victim_archiver = procs[0], procs[3]

        def victims_busy() -> bool:
            return (
                _metric(ports[0], "events_processed_total", outcome="applied") >= 200
                and _metric(ports[3], "archiver_rows_written_total", table="events") >= 200
            )

        wait_for(victims_busy, timeout=60)
        victim_updater.send_signal(signal.SIGKILL)
        victim_archiver.send_signal(signal.SIGKILL)
        victim_updater.wait(10)
        victim_archiver.wait(10)
        killed.set()
        killed_at = time.monotonic()
        at_kill = (_applied(redis_conn, version, customers), len(_archived(table)))
        assert at_kill[0] < total and at_kill[1] < total
        feeder.join(60)

        def caught_up() -> bool:
            return (
                _applied(redis_conn, version, customers) >= total
                and len(_archived(table)) >= total
                and not pending_events(bootstrap, topic, env["RECSYS_UPDATER_GROUP"])
                and not pending_events(bootstrap, topic, env["RECSYS_ARCHIVER_GROUP"])
            )

        wait_for(caught_up, timeout=90)
        timings["kill_to_caught_up"] = time.monotonic() - killed_at
        duplicates = sum(_metric(p, "events_duplicates_skipped_total") for p in ports[1:3])
        survivors_wrote = sum(
            _metric(p, "archiver_rows_written_total", table="events") for p in ports[4:]
        )
    finally:
        killed.set()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if feeder.is_alive():
            feeder.join(60)
    timings["total"] = time.monotonic() - started
    print(f"\nkill test: {total} events over 6 partitions; applied/archived at the kill "
          f"{at_kill}; survivors skipped {duplicates:.0f} redelivered events as applied and "
          f"wrote {survivors_wrote:.0f} rows; seconds {timings}")  # fmt: skip

    # Applied once each: every customer's count is its events, its last event the last.
    pipe = redis_conn.pipeline(transaction=False)
    for customer in customers:
        pipe.hget(keys.profile(version, customer), "purchases")
        pipe.get(keys.last_event(customer))
    replies = pipe.execute()
    logs_tail = "\n".join(log.read_text(errors="replace")[-1500:] for log in logs)
    for n, customer in enumerate(customers):
        mine = [e for e in events if e.customer_id == customer]
        assert int(replies[2 * n] or 0) == len(mine), (customer, logs_tail)
        assert replies[2 * n + 1] == mine[-1].event_id.encode()
    # And in order: a customer's vector is the EMA chain of its events, once each.
    norm_raw = redis_conn.hget(keys.model_meta(version), "user_norm_median")
    norm = float(norm_raw) if norm_raw else 1.0
    items = {a: decode(redis_conn.get(keys.item_vector(version, a))) for a in articles}
    for customer in customers[:3]:
        own = [e for e in events if e.customer_id == customer]
        assert_ema_chain(redis_conn, version, customer, own, items, settings.ema_rate, norm)
    # Archived once each, by two archivers merging into one table.
    ids = pd.Series(_archived(table))
    assert ids.is_unique, f"{int(ids.duplicated().sum())} events archived twice"
    assert set(ids) == {e.event_id for e in events}, f"{total - len(set(ids))} events lost"

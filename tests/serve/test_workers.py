"""`recsys serve` with RECSYS_API_WORKERS=2, as a user runs it: both processes answer,
/metrics reports the sum over them, and stopping the server stops every worker."""

from __future__ import annotations

import json
import os
import re
import time

import httpx
import psutil

from batch.pipeline import BatchReport
from recsys.api_keys import new_key
from recsys.engines.process import free_port, recsys_command
from recsys.settings import Settings
from recsys_bench.serving import start_server


def _counter(text: str, name: str) -> float:
    match = re.search(rf"^{name}(?:{{[^}}]*}})? ([\d.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_two_workers_share_the_port_and_report_metrics_together(
    settings: Settings, trained: BatchReport, known_customer: str
) -> None:
    port = free_port()
    scraper, scraper_entry = new_key("prometheus", "metrics")
    env = {
        **os.environ,
        "RECSYS_DATA_DIR": str(settings.data_dir),
        "RECSYS_REDIS_URL": settings.redis_url or "",
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "RECSYS_API_WORKERS": "2",
        # /metrics needs a metrics key (serve.access): the scrape sends one.
        "RECSYS_API_KEYS": json.dumps([scraper_entry.entry()]),
    }
    server = start_server(
        recsys_command("serve", "--port", str(port)),
        env,
        port,
        settings.data_dir / "api-workers.log",
        "/health/ready",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        workers = psutil.Process(server.popen.pid).children(recursive=True)
        assert len([w for w in workers if "python" in w.name().lower()]) >= 2
        # New connections each time, so the kernel spreads them over the workers.
        answered = 0
        deadline = time.monotonic() + 30
        while answered < 40 and time.monotonic() < deadline:
            body = httpx.get(f"{base}/recommend/{known_customer}", params={"k": 3}, timeout=5)
            assert body.status_code == 200
            assert body.json()["source"] == "personalized"
            answered += 1
        scrape = {"Authorization": f"Bearer {scraper}"}
        metrics = httpx.get(f"{base}/metrics", headers=scrape, timeout=5).text
        assert _counter(metrics, "recommendation_requests_total") == answered
    finally:
        server.stop()
    assert not server.alive()
    # The workers are joined before the server exits; multiprocessing's resource tracker
    # (a child too) leaves once the server's end of its pipe closes, a moment after.
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []

"""Requests a correct API refuses with a 4xx: the simulator mixes them into its load."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from recsys.ids import MAX_ID_LENGTH


@dataclass(frozen=True)
class BadRequest:
    reason: str
    method: str
    path: str
    params: dict[str, str] | None = None
    body: bytes | None = None  # sent as application/json, malformed on purpose for one


def _k_zero(customer: str, _article: str, _serial: str) -> BadRequest:
    return BadRequest("k=0", "GET", f"/recommend/{customer}", {"k": "0"})


def _k_too_big(customer: str, _article: str, _serial: str) -> BadRequest:
    return BadRequest("k=51", "GET", f"/recommend/{customer}", {"k": "51"})


def _long_id(_customer: str, _article: str, _serial: str) -> BadRequest:
    return BadRequest("over-long id", "GET", f"/recommend/{'c' * (MAX_ID_LENGTH + 1)}")


def _unknown_article(customer: str, _article: str, serial: str) -> BadRequest:
    body = {"customer_id": customer, "article_id": f"sim-unknown-{serial}"}
    return BadRequest("unknown article", "POST", "/events/purchase", None, _json(body))


def _malformed_json(customer: str, article: str, _serial: str) -> BadRequest:
    cut = _json({"customer_id": customer, "article_id": article})[:-2]
    return BadRequest("malformed JSON", "POST", "/events/purchase", None, cut)


def _missing_field(customer: str, _article: str, _serial: str) -> BadRequest:
    return BadRequest(
        "missing article_id", "POST", "/events/purchase", None, _json({"customer_id": customer})
    )


def _unknown_event_type(customer: str, article: str, _serial: str) -> BadRequest:
    body = {"customer_id": customer, "article_id": article}
    return BadRequest("unknown event type", "POST", "/events/wishlist", None, _json(body))


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


# Each takes a real customer, a real article and a serial unique in the run.
KINDS: Final[tuple[Callable[[str, str, str], BadRequest], ...]] = (
    _k_zero,
    _k_too_big,
    _long_id,
    _unknown_article,
    _malformed_json,
    _missing_field,
    _unknown_event_type,
)

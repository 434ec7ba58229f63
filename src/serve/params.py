"""Query parameters shared by the endpoints, validated into typed values.

A bad value is a 422 whose `detail` names the parameter, like FastAPI's own checks.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Query
from fastapi.exceptions import RequestValidationError

from recsys.ids import ID_PATTERN, MAX_ID_LENGTH, is_valid_id
from recsys.index.base import ItemFilter

MAX_LIST_VALUES = 100
# Values plus commas: a bound on the raw text before it is split.
MAX_LIST_CHARS = MAX_LIST_VALUES * (MAX_ID_LENGTH + 1)


def invalid(name: str, message: str, value: Any) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", name), "msg": message, "input": value}]
    )


def comma_list(name: str, raw: str | None, *, ids: bool = False) -> tuple[str, ...]:
    """'a, b,,c' -> ('a', 'b', 'c'); at most MAX_LIST_VALUES values of sane length."""
    if raw is None:
        return ()
    values = tuple(dict.fromkeys(v.strip() for v in raw.split(",") if v.strip()))
    if len(values) > MAX_LIST_VALUES:
        raise invalid(name, f"at most {MAX_LIST_VALUES} comma-separated values", raw)
    for value in values:
        if len(value) > MAX_ID_LENGTH or (ids and not is_valid_id(value)):
            raise invalid(name, f"not a valid value: {value[:MAX_ID_LENGTH]!r}", raw)
    return values


def _text(description: str) -> Any:
    return Query(max_length=MAX_LIST_CHARS, description=description)


async def item_rules(
    product_group: Annotated[
        str | None, _text("Only these product groups (product_group_name, comma-separated)")
    ] = None,
    product_type: Annotated[
        str | None, _text("Only these product types (product_type_name, comma-separated)")
    ] = None,
    exclude_ids: Annotated[str | None, _text("Never these article ids (comma-separated)")] = None,
    exclude_groups: Annotated[
        str | None, _text("Never these product groups (comma-separated)")
    ] = None,
    exclude_types: Annotated[
        str | None, _text("Never these product types (comma-separated)")
    ] = None,
) -> ItemFilter:
    """The business rules of a request; they run inside the index. (Async, so FastAPI
    does not hand this bit of parsing to its threadpool.)"""
    return ItemFilter(
        product_groups=comma_list("product_group", product_group),
        product_types=comma_list("product_type", product_type),
        exclude_ids=comma_list("exclude_ids", exclude_ids, ids=True),
        exclude_groups=comma_list("exclude_groups", exclude_groups),
        exclude_types=comma_list("exclude_types", exclude_types),
    )


ItemRules = Annotated[ItemFilter, Depends(item_rules)]

K = Annotated[int, Query(ge=1, le=50, description="How many items (1-50)")]


def _external_id(description: str) -> Any:
    return Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN, description=description)


CustomerId = Annotated[str, _external_id("The external customer_id")]
ArticleId = Annotated[str, _external_id("The external article_id")]

"""Parameters shared by the endpoints, validated into typed values.

A bad value is a 422 whose `detail` names the parameter, like FastAPI's own checks.

The item-list routes (/recommend, /items/{id}/similar, /popular) run on every page view,
so their query strings are read by one pydantic model per route (`ListQuery`,
`RecommendQuery`) instead of FastAPI's per-parameter dependency solving: the same checks,
the same 422s, ~100 µs less per request (docs/benchmarks.md). The model also documents
the parameters in the OpenAPI schema (`query_parameters`).
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from fastapi import Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
    return Field(default=None, max_length=MAX_LIST_CHARS, description=description)


class ListQuery(BaseModel):
    """The query of an item list: how many, and the business rules (run inside the index)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    k: int = Field(default=10, ge=1, le=50, description="How many items (1-50)")
    product_group: str | None = _text(
        "Only these product groups (product_group_name, comma-separated)"
    )
    product_type: str | None = _text(
        "Only these product types (product_type_name, comma-separated)"
    )
    exclude_ids: str | None = _text("Never these article ids (comma-separated)")
    exclude_groups: str | None = _text("Never these product groups (comma-separated)")
    exclude_types: str | None = _text("Never these product types (comma-separated)")

    @classmethod
    def of(cls, request: Request) -> Self:
        """The request's query string, validated; a RequestValidationError (422) names
        the first bad parameter."""
        try:
            return cls.model_validate(dict(request.query_params))
        except ValidationError as exc:
            raise RequestValidationError(
                [
                    {**error, "loc": ("query", *error["loc"])}
                    for error in exc.errors(include_url=False)
                ]
            ) from None

    def rules(self) -> ItemFilter:
        return ItemFilter(
            product_groups=comma_list("product_group", self.product_group),
            product_types=comma_list("product_type", self.product_type),
            exclude_ids=comma_list("exclude_ids", self.exclude_ids, ids=True),
            exclude_groups=comma_list("exclude_groups", self.exclude_groups),
            exclude_types=comma_list("exclude_types", self.exclude_types),
        )


class RecommendQuery(ListQuery):
    explain: bool = Field(
        default=False,
        description="Say which recent purchases led to each item (a key granting read)",
    )
    explain_top_k: int = Field(
        default=3, ge=1, le=10, description="Purchases per explanation (1-10)"
    )
    diversity_lambda: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="MMR trade-off: 1 is pure relevance, 0 pure diversity; "
        "default RECSYS_DIVERSITY_LAMBDA",
    )


def query_parameters(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting a query model's fields as the operation's parameters."""
    schema = model.model_json_schema()
    parameters = []
    for name, field in schema["properties"].items():
        field = dict(field)
        description = field.pop("description", None)
        field.pop("title", None)
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": name in schema.get("required", ()),
                "schema": field,
                **({"description": description} if description else {}),
            }
        )
    return {"parameters": parameters}


def _external_id(description: str) -> Any:
    return Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN, description=description)


CustomerId = Annotated[str, _external_id("The external customer_id")]
ArticleId = Annotated[str, _external_id("The external article_id")]

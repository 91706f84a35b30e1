"""Request and response bodies of the public API (the OpenAPI schema is generated from these).

Every field is bounded and unknown fields are refused, so bad input is a 422 that names the
field. Responses are declared for the schema but serialised straight from the recommender's
dataclasses with orjson: the path never re-validates what it just built.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from service.catalog.filters import ItemFilter
from service.catalog.live import LiveItem
from service.recommender import Event, RecommendQuery, RelatedQuery, Relation

MAX_K = 500
MAX_IDS = 1_000
MAX_BATCH = 100
MAX_EVENTS = 1_000
MAX_EMBEDDING_DIM = 4_096
MAX_ITEMS = 1_000
MAX_TITLE_CHARS = 1_000
MAX_ATTRIBUTES = 64
MAX_BASKET = 100

Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Genre = Annotated[str, StringConstraints(min_length=1, max_length=64)]


def _whole(value: object) -> object:
    """JSON Schema's integers include 3.0: accept a float with no fraction, as its int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# the validator last: it wraps (and runs before) the integer check and its bounds
K = Annotated[
    int,
    Field(ge=1, le=MAX_K, description="How many items to return."),
    BeforeValidator(_whole),
]
Year = Annotated[int, Field(ge=0, le=3_000), BeforeValidator(_whole)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
FLOAT32_MAX = 3.4028234663852886e38
# an embedding value must survive the cast to float32 (1e300 would become infinite)
Float32 = Annotated[float, Field(allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
EventType = Literal[
    "view", "click", "rating", "purchase", "add_to_cart", "like", "play", "dislike", "hide"
]
RATING_SCALE = (0.5, 5.0)  # MovieLens' scale; a rating outside it is refused


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # true is not 1


class Filters(_Strict):
    """Years are an inclusive range; `year_min > year_max` is an empty range (an empty page):
    JSON Schema cannot relate two fields, so the schema could not promise a 422 for it."""

    genres_any: list[Genre] | None = Field(default=None, max_length=64)
    genres_none: list[Genre] | None = Field(default=None, max_length=64)
    year_min: Year | None = None
    year_max: Year | None = None

    def to_domain(self) -> ItemFilter:
        return ItemFilter(
            genres_any=frozenset(self.genres_any or ()),
            genres_none=frozenset(self.genres_none or ()),
            year_min=self.year_min,
            year_max=self.year_max,
        )


def _filter(filters: Filters | None) -> ItemFilter | None:
    return filters.to_domain() if filters is not None else None


class RecommendRequest(_Strict):
    user_id: Id
    k: K = 10
    exclude_item_ids: list[Id] = Field(default_factory=list, max_length=MAX_IDS)
    filters: Filters | None = None
    history: list[Id] | None = Field(
        default=None, max_length=MAX_IDS, description="Item ids, oldest first, for session users."
    )

    def to_query(self) -> RecommendQuery:
        return RecommendQuery(
            user_id=self.user_id,
            k=self.k,
            exclude_item_ids=tuple(self.exclude_item_ids),
            item_filter=_filter(self.filters),
            history=tuple(self.history) if self.history else None,
        )


class BatchRequest(_Strict):
    requests: list[RecommendRequest] = Field(min_length=1, max_length=MAX_BATCH)


class RetrieveRequest(_Strict):
    """Exactly one of `item_id`, `items`, `embedding` or `history` is the query.

    `relation` is what "nearest" means for `item_id` and `items`: `similar` (two-tower cosine)
    or `complementary` (summed IN vectors against OUT vectors: what goes with them)."""

    item_id: Id | None = None
    items: list[Id] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_BASKET,
        description=f"A basket (at most {MAX_BASKET} item ids); none of them is returned.",
    )
    embedding: list[Float32] | None = Field(
        default=None, min_length=1, max_length=MAX_EMBEDDING_DIM
    )
    history: list[Id] | None = Field(default=None, min_length=1, max_length=MAX_IDS)
    relation: Relation = "similar"
    user_id: Id | None = Field(
        default=None, description="With item_id or items: leave out what this user has seen."
    )
    k: K = 10
    filters: Filters | None = None

    @model_validator(mode="after")
    def _one_query(self) -> Self:
        names = ("item_id", "items", "embedding", "history")
        given = [n for n in names if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of item_id, items, embedding, history")
        by_items = given[0] in ("item_id", "items")
        if self.relation == "complementary" and not by_items:
            raise ValueError("relation complementary takes item_id or items")
        if self.user_id is not None and not by_items:
            raise ValueError("user_id goes with item_id or items")
        return self

    @property
    def item_filter(self) -> ItemFilter | None:
        return _filter(self.filters)

    @property
    def related(self) -> bool:
        """Served by `Recommender.related` (not the plain similar-to-one-item search)."""
        if self.items is not None:
            return True
        return self.item_id is not None and (
            self.relation == "complementary" or self.user_id is not None
        )

    def to_related(self) -> RelatedQuery:
        one = self.item_id is not None
        return RelatedQuery(
            item_ids=(self.item_id,) if self.item_id is not None else tuple(self.items or ()),
            k=self.k,
            relation=self.relation,
            item_filter=self.item_filter,
            user_id=self.user_id,
            field="item_id" if one else "items",
        )


class EventIn(_Strict):
    user_id: Id
    item_id: Id
    type: EventType
    timestamp: Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)] | None = Field(
        default=None, description="Unix seconds; default: arrival time."
    )
    request_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    value: FiniteFloat | None = Field(default=None, description="E.g. the rating given.")

    @model_validator(mode="after")
    def _rating_on_the_scale(self) -> Self:
        if self.type == "rating":
            low, high = RATING_SCALE
            if self.value is None or not low <= self.value <= high:
                raise ValueError(f"value: a rating needs a value in [{low}, {high}]")
        return self

    def to_domain(self) -> Event:
        return Event(
            self.user_id, self.item_id, self.type, self.timestamp, self.request_id, self.value
        )


EventsBody = EventIn | Annotated[list[EventIn], Field(min_length=1, max_length=MAX_EVENTS)]


AttributeName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
AttributeValue = (
    Annotated[str, StringConstraints(max_length=1_000)] | int | FiniteFloat | bool | None
)


class ItemIn(_Strict):
    """A catalog item to upsert; embedded from its content by the bundle's item tower."""

    item_id: Id
    title: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TITLE_CHARS)]
    genres: list[Genre] = Field(default_factory=list, max_length=64)
    year: Year | None = None
    attributes: dict[AttributeName, AttributeValue] = Field(
        default_factory=dict, max_length=MAX_ATTRIBUTES, description="Kept, not embedded."
    )

    def to_domain(self) -> LiveItem:
        return LiveItem(
            self.item_id, self.title, tuple(self.genres), self.year or None, dict(self.attributes)
        )


ItemsBody = ItemIn | Annotated[list[ItemIn], Field(min_length=1, max_length=MAX_ITEMS)]


class Availability(_Strict):
    available: bool


class ItemOut(BaseModel):
    item_id: str
    score: float
    title: str
    genres: list[str]


class RecommendResponse(BaseModel):
    request_id: str
    user_id: str
    model_version: str
    arm: str
    items: list[ItemOut]
    fallback: str | None = Field(description="null, or why the answer is not personalised.")


class BatchResponse(BaseModel):
    responses: list[RecommendResponse]


class RetrieveResponse(BaseModel):
    request_id: str
    model_version: str
    arm: str
    items: list[ItemOut]
    fallback: str | None


class EventsAccepted(BaseModel):
    accepted: int


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


COMMON_RESPONSES: dict[int | str, dict[str, object]] = {
    413: {"model": ErrorResponse, "description": "Body larger than DUET_MAX_BODY_BYTES."},
    422: {"model": ErrorResponse, "description": "Invalid input; `error.field` names the field."},
    503: {
        "model": ErrorResponse,
        "description": "Not ready, overloaded or store unavailable: retry after Retry-After.",
    },
}
"""Answers the middleware and handlers may give on any body-taking route, declared once."""

"""Checks of query arguments that the schema cannot express, and pagination.

Every check raises `InvalidArgumentError`. Raised inside a resolver, it becomes a GraphQL error
with the field's ``path`` while the field itself resolves to null, so one bad field does not fail
the other fields of the same query.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

# Documented limit of the Insights API for every apiIds, appIds and subscribers list.
MAX_FILTER_IDS = 5
# Documented default page size of PaginationFilter.
DEFAULT_PAGE_LIMIT = 5
SORT_ORDERS = ("asc", "desc")

_ID_LIST_FIELDS = ("apiIds", "appIds", "subscribers")

Row = TypeVar("Row")


class InvalidArgumentError(ValueError):
    """A query argument breaks a documented constraint of the Insights API."""


def check_id_lists(value: Mapping[str, Any] | None, argument: str) -> None:
    """Reject an input object whose apiIds, appIds or subscribers list has more than five entries.

    Nested input objects (such as a ``searchFilter``) are checked as well; ``argument`` is the
    path used in the message, for example ``apiUsageOvertimeFilter``.
    """
    if value is None:
        return
    for key, item in value.items():
        path = f"{argument}.{key}"
        if isinstance(item, Mapping):
            check_id_lists(item, path)
        elif key in _ID_LIST_FIELDS and item is not None and len(item) > MAX_FILTER_IDS:
            raise InvalidArgumentError(
                f"{path} has {len(item)} entries, over the maximum of {MAX_FILTER_IDS}; "
                f"split the request into queries of at most {MAX_FILTER_IDS} ids each"
            )


def id_set(ids: Sequence[str | None] | None) -> frozenset[str] | None:
    """Return the non-null ids of a filter list, or None when the list is absent or empty."""
    if not ids:
        return None
    return frozenset(item for item in ids if item is not None)


@dataclass(frozen=True)
class Search:
    """A parsed SearchFilter: a case-insensitive substring and an optional API restriction."""

    text: str
    api_ids: frozenset[str] | None

    def matches(self, *values: str | None) -> bool:
        needle = self.text.casefold()
        return any(value is not None and needle in value.casefold() for value in values)


def parse_search_filter(search_filter: Mapping[str, Any] | None, argument: str) -> Search | None:
    """Parse a SearchFilter; apiIds need a non-blank searchText, as the API documents."""
    if search_filter is None:
        return None
    text = (search_filter.get("searchText") or "").strip()
    api_ids = id_set(search_filter.get("apiIds"))
    if not text:
        if api_ids:
            raise InvalidArgumentError(
                f"{argument}.apiIds is not allowed without {argument}.searchText; "
                "give a search text or move the ids to the filter's own apiIds"
            )
        return None
    return Search(text=text, api_ids=api_ids)


@dataclass(frozen=True)
class Page:
    """A parsed PaginationFilter with the defaults filled in; `as_result` echoes it as Pagination."""

    limit: int
    offset: int
    sort_by: str
    sort_order: str

    def apply(self, rows: list[Row], sort_keys: Mapping[str, Callable[[Row], Any]], tie_key: Callable[[Row], Any]) -> list[Row]:
        """Sort ``rows`` by the page's column and order, then cut out the page.

        ``tie_key`` orders rows with equal sort values in ascending order, so pages never overlap.
        """
        rows = sorted(rows, key=tie_key)
        rows.sort(key=sort_keys[self.sort_by], reverse=self.sort_order == "desc")
        return rows[self.offset : self.offset + self.limit]

    def as_result(self, total: int) -> dict[str, Any]:
        return {
            "total": total,
            "limit": self.limit,
            "offset": self.offset,
            "sortBy": self.sort_by,
            "sortOrder": self.sort_order,
        }


def parse_pagination(
    pagination_filter: Mapping[str, Any] | None,
    argument: str,
    *,
    sort_columns: Sequence[str],
    default_sort_by: str,
    force_order: str | None = None,
) -> Page:
    """Parse a PaginationFilter: limit 5, offset 0 and ascending order unless given.

    ``force_order`` is set for count-ranked operations, which always sort in descending order
    whatever sortOrder the request gives.
    """
    pagination_filter = pagination_filter or {}
    limit = pagination_filter.get("limit")
    offset = pagination_filter.get("offset")
    sort_by = pagination_filter.get("sortBy") or default_sort_by
    sort_order = (pagination_filter.get("sortOrder") or "asc").lower()

    limit = DEFAULT_PAGE_LIMIT if limit is None else limit
    offset = 0 if offset is None else offset
    if limit < 0:
        raise InvalidArgumentError(f"{argument}.limit is {limit}; give 0 or a positive page size")
    if offset < 0:
        raise InvalidArgumentError(f"{argument}.offset is {offset}; give 0 or a positive row offset")
    if sort_by not in sort_columns:
        raise InvalidArgumentError(
            f"{argument}.sortBy {sort_by!r} is not a column of this query; use one of {', '.join(sort_columns)}"
        )
    if sort_order not in SORT_ORDERS:
        raise InvalidArgumentError(f"{argument}.sortOrder {sort_order!r} is invalid; use 'asc' or 'desc'")
    return Page(limit=limit, offset=offset, sort_by=sort_by, sort_order=force_order or sort_order)


def check_choice(value: str | None, allowed: Sequence[str], argument: str) -> str | None:
    """Return ``value`` in upper case when it is one of ``allowed``; None passes through."""
    if value is None:
        return None
    normalized = value.upper()
    if normalized not in allowed:
        raise InvalidArgumentError(f"{argument} {value!r} is invalid; use one of {', '.join(allowed)}")
    return normalized

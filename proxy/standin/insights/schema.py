"""The Insights schema, built once per process from the packaged SDL with every resolver bound."""

from __future__ import annotations

import functools
from importlib import resources

from graphql import GraphQLSchema, build_schema

# Importing the resolver modules fills RESOLVERS through their @resolver decorators.
from proxy.standin.insights import (  # noqa: F401
    alerts,
    automation,
    breakdowns,
    error_queries,
    latency,
    listing,
    reports,
    usage,
)
from proxy.standin.insights.registry import RESOLVERS

SCHEMA_PACKAGE = "proxy.standin"
SCHEMA_FILE = "insights-schema.graphql"


def schema_sdl() -> str:
    """Return the packaged SDL: the documented schema followed by the observed extensions."""
    return resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


@functools.cache
def insights_schema() -> GraphQLSchema:
    """Build the schema and bind a resolver to every Query field; fail when one has none."""
    schema = build_schema(schema_sdl())
    query_fields = schema.query_type.fields if schema.query_type else {}
    missing = sorted(set(query_fields) - set(RESOLVERS))
    unknown = sorted(set(RESOLVERS) - set(query_fields))
    if missing or unknown:
        raise RuntimeError(
            f"Insights resolvers do not match {SCHEMA_FILE}: fields without a resolver {missing}, "
            f"resolvers without a field {unknown}"
        )
    for name, field in query_fields.items():
        field.resolve = RESOLVERS[name]
    return schema

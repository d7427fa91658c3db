"""The table of Query field resolvers, filled by the ``@resolver`` decorator of each module."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from graphql import GraphQLError, GraphQLResolveInfo

from proxy.standin.insights.arguments import InvalidArgumentError
from proxy.standin.insights.context import QueryContext

logger = logging.getLogger(__name__)

Resolver = Callable[..., Any]
RESOLVERS: dict[str, Callable[..., Any]] = {}


def resolver(field_name: str) -> Callable[[Resolver], Resolver]:
    """Register a function ``(context, **arguments)`` as the resolver of ``Query.<field_name>``.

    `InvalidArgumentError` reaches the client with its message. Any other exception is a bug in
    the stand-in: it is logged with its traceback and the client gets a generic error, so the
    response never carries a Python exception text.
    """

    def register(function: Resolver) -> Resolver:
        if field_name in RESOLVERS:
            raise RuntimeError(f"Query.{field_name} has two resolvers; remove one of them")

        @functools.wraps(function)
        def resolve(_root: object, info: GraphQLResolveInfo, **arguments: Any) -> Any:
            context: QueryContext = info.context
            try:
                return function(context, **arguments)
            except InvalidArgumentError:
                raise
            except Exception as exc:
                logger.exception("insights.resolver_failed field=%s", field_name)
                raise GraphQLError(f"Internal error while resolving {field_name}; the stand-in log has the details") from exc

        RESOLVERS[field_name] = resolve
        return function

    return register

"""The entry point of the Insights GraphQL layer: one JSON request in, one status and body out.

Responses, as the stand-in's gateway sends them:

* the body is not a JSON object, ``query`` is missing or not a string, ``variables`` is not an
  object or null, or ``operationName`` is not a string or null: 400 and
  ``{"errors":[{"message": ...}]}``;
* the document does not parse or does not validate (unknown field, bad or missing variable):
  200 and ``{"errors":[{"message", "locations"}]}`` without ``data``;
* otherwise 200 and ``{"data": ...}``, plus ``errors`` with a ``path`` for each field whose
  arguments broke a documented constraint; such a field is null.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from graphql import DocumentNode, ExecutionResult, GraphQLError, execute, parse, validate

from proxy.standin.insights.context import QueryContext
from proxy.standin.insights.fixture import FIXTURE_ORG, Organization
from proxy.standin.insights.schema import insights_schema
from proxy.standin.insights.traffic import traffic_model

Body = dict[str, Any]


class InsightsService:
    """Validate and execute Insights queries against the deterministic data of one organization.

    ``clock`` returns wall-clock Unix seconds. It decides where the data ends ("now") and which
    alerts are still kept, so tests inject a fixed clock.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, organization: Organization = FIXTURE_ORG) -> None:
        self.clock = clock
        self.organization = organization
        self.schema = insights_schema()
        self.model = traffic_model(organization)

    async def execute(self, payload: Any) -> tuple[int, Body]:
        """Execute one parsed JSON request body and return the HTTP status and the JSON-ready body."""
        message = request_error(payload)
        if message is not None:
            return 400, {"errors": [{"message": message}]}

        try:
            document = parse(payload["query"])
        except GraphQLError as error:
            return 200, {"errors": [error.formatted]}
        validation_errors = validate(self.schema, document)
        if validation_errors:
            return 200, {"errors": [error.formatted for error in validation_errors]}

        context = QueryContext(organization=self.organization, model=self.model, now=self.clock())
        # The first query over a long range generates its days, about 2 s for a year of all six
        # fixture APIs on a 2-core container. Execution therefore runs in a worker thread, so the
        # event loop keeps serving other requests.
        result = await asyncio.to_thread(self._execute_document, document, payload, context)
        return 200, result_body(result)

    def _execute_document(self, document: DocumentNode, payload: dict[str, Any], context: QueryContext) -> ExecutionResult:
        result = execute(
            self.schema,
            document,
            variable_values=payload.get("variables"),
            operation_name=payload.get("operationName"),
            context_value=context,
        )
        # Every resolver is synchronous, so graphql-core returns the result itself, never an awaitable.
        assert isinstance(result, ExecutionResult)
        return result


def request_error(payload: Any) -> str | None:
    """Return why a request body is not a GraphQL request, or None when it is one."""
    if not isinstance(payload, dict):
        return f"The request body must be a JSON object with a 'query' string, not a JSON {_json_type(payload)}"
    query = payload.get("query")
    if query is None:
        return "The request body has no 'query'; send the GraphQL document as a string in 'query'"
    if not isinstance(query, str):
        return f"'query' must be a string containing the GraphQL document, not a JSON {_json_type(query)}"
    variables = payload.get("variables")
    if variables is not None and not isinstance(variables, dict):
        return f"'variables' must be a JSON object or null, not a JSON {_json_type(variables)}"
    operation_name = payload.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        return f"'operationName' must be a string or null, not a JSON {_json_type(operation_name)}"
    return None


def result_body(result: ExecutionResult) -> Body:
    """Shape an execution result as ``{"data", "errors"}``, leaving out ``data`` when execution never began."""
    body: Body = {}
    if result.data is not None:
        body["data"] = result.data
    if result.errors:
        body["errors"] = [error.formatted for error in result.errors]
    return body


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"

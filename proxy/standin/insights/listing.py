"""Resolvers of the listing queries: APIs, applications, providers, subscribers, organizations,
environments and tenants."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.standin.insights.arguments import check_id_lists, id_set
from proxy.standin.insights.context import QueryContext
from proxy.standin.insights.fixture import Api, Application, Environment
from proxy.standin.insights.registry import resolver


def api_result(api: Api) -> dict[str, Any]:
    return {
        "id": api.id,
        "name": api.name,
        "version": api.version,
        "provider": api.provider,
        "displayName": api.display_name,
    }


def application_result(application: Application) -> dict[str, Any]:
    return {"id": application.id, "name": application.name, "owner": application.owner}


def environment_result(environment: Environment) -> dict[str, Any]:
    return {
        "id": environment.id,
        "externalEnvId": environment.external_env_id,
        "internalEnvId": environment.internal_env_id,
        "sandboxEnvId": environment.sandbox_env_id,
        "name": environment.name,
        "type": environment.type,
    }


def subscribed_applications(context: QueryContext, apis: tuple[Api, ...]) -> list[Application]:
    """Return the applications subscribed to any of ``apis``, in the organization's order."""
    subscribed = {subscription.application_id for api in apis for subscription in api.subscriptions}
    return [application for application in context.organization.applications if application.id in subscribed]


@resolver("listAllAPI")
def list_all_apis(context: QueryContext, dataFilter: Mapping[str, Any], provider: str | None = None) -> list[dict[str, Any]]:
    scope = context.scope(dataFilter)
    return [api_result(api) for api in scope.apis if provider is None or api.provider == provider]


@resolver("listApplications")
def list_applications(
    context: QueryContext, dataFilter: Mapping[str, Any], applicationFilter: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    check_id_lists(applicationFilter, "applicationFilter")
    application_filter = applicationFilter or {}
    scope = context.scope(dataFilter, id_set(application_filter.get("apiIds")))
    owner = application_filter.get("owner")
    return [
        application_result(application)
        for application in subscribed_applications(context, scope.apis)
        if owner is None or application.owner == owner
    ]


@resolver("listProviders")
def list_providers(context: QueryContext, dataFilter: Mapping[str, Any]) -> list[dict[str, Any]]:
    providers = sorted({api.provider for api in context.scope(dataFilter).apis})
    return [{"name": provider} for provider in providers]


@resolver("listSubscribers")
def list_subscribers(
    context: QueryContext, dataFilter: Mapping[str, Any], subscriberFilter: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    check_id_lists(subscriberFilter, "subscriberFilter")
    scope = context.scope(dataFilter, id_set((subscriberFilter or {}).get("apiIds")))
    owners = sorted({application.owner for application in subscribed_applications(context, scope.apis)})
    return [{"name": owner} for owner in owners]


@resolver("listOrganizations")
def list_organizations(context: QueryContext) -> list[dict[str, Any]]:
    organization = context.organization
    return [{"id": organization.id, "uuid": organization.uuid, "handle": organization.handle, "name": organization.name}]


@resolver("listEnvironments")
def list_environments(context: QueryContext, org: Mapping[str, Any], projectId: str | None = None) -> list[dict[str, Any]]:
    if not context.matches_organization(org.get("orgId")):
        return []
    if projectId is not None and all(project.id != projectId for project in context.organization.projects):
        return []
    return [environment_result(environment) for environment in context.organization.environments]


@resolver("listTenants")
def list_tenants(context: QueryContext, tenantDataFilter: Mapping[str, Any]) -> list[str]:
    if not context.matches_organization(tenantDataFilter.get("orgId")):
        return []
    env_ids = [tenantDataFilter.get("envId"), *(tenantDataFilter.get("environmentIds") or ())]
    if any(env_id is not None for env_id in env_ids) and not context.environments_for(env_ids):
        return []
    return [context.organization.tenant]

"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from cloud.api.auth import AuthMiddleware
from cloud.api.errors import ProblemMiddleware, install_error_handlers
from cloud.api.openapi import install_openapi
from cloud.api.requestctx import RequestIdMiddleware
from cloud.api.routes import (
    alerts,
    assignments,
    audit,
    bundles,
    cohorts,
    devices,
    drift,
    experiments,
    firmware,
    health,
    identity,
    keys,
    models,
    rollbacks,
    rollouts,
    session,
    telemetry,
    tokens,
    training,
    tuf,
)
from cloud.context import HubContext
from cloud.dashboard import mount_dashboard
from cloud.observability.http import HttpMetricsMiddleware

API_PREFIX = "/api/v1"


def create_app(ctx: HubContext) -> FastAPI:
    """An app bound to one hub's database, artifact store and publisher."""
    app = FastAPI(
        title="edgefleet hub",
        version="1",
        description="Registry, devices and assignments of an edgefleet fleet. Every /api route needs a "
        "bearer token; roles: viewer (read) < operator (upload, assign) < admin (tokens).",
    )
    app.state.hub = ctx
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(tuf.router)
    app.include_router(alerts.metrics_router)  # /metrics for Prometheus
    api = APIRouter(prefix=API_PREFIX)
    for module in (models, devices, assignments, tokens, keys, firmware, rollbacks):
        api.include_router(module.router)
    for module in (experiments, bundles):  # the optimization pipeline: runs, bundles, variants
        api.include_router(module.router)
    api.include_router(devices.fleet_router)  # the fleet's device counts for the overview
    api.include_router(cohorts.router)  # named sets of devices, by labels or by list
    api.include_router(rollouts.router)  # staged rollouts over cohorts, judged by gates
    api.include_router(alerts.router)  # alert rules over cohort metrics, alerts, webhook receivers
    api.include_router(drift.router)  # drift and labelled accuracy per cohort
    api.include_router(telemetry.router)  # telemetry series per cohort, from the rollups
    api.include_router(training.router)  # continuous training runs and labelled uploads
    api.include_router(session.router)  # dashboard login: a session cookie for an API token
    api.include_router(audit.router)  # every mutation made through the API
    api.include_router(identity.router)  # device certificates from the fleet CA: provision, revoke
    app.include_router(api)
    mount_dashboard(app)  # the web dashboard under /ui/, reading the API above
    install_openapi(app)  # problem details, statuses and examples on every operation
    # Token or session cookie checked before any route reads a body; inside the problem answers.
    app.add_middleware(AuthMiddleware)
    # Just inside the request id: an error escaping any middleware or route answers a problem with it.
    app.add_middleware(ProblemMiddleware)
    # Outside the problem answers, so it times and counts them with their real status (metrics, access log).
    app.add_middleware(HttpMetricsMiddleware, metrics=ctx.metrics.http)
    # Added last, so it runs first: every later middleware, route and log record sees the request id.
    app.add_middleware(RequestIdMiddleware)
    return app

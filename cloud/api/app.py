"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from cloud.api.errors import install_error_handlers
from cloud.api.requestctx import RequestIdMiddleware
from cloud.api.routes import (
    alerts,
    assignments,
    bundles,
    cohorts,
    devices,
    drift,
    experiments,
    firmware,
    health,
    keys,
    models,
    rollbacks,
    rollouts,
    tokens,
    training,
    tuf,
)
from cloud.context import HubContext

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
    api.include_router(cohorts.router)  # named sets of devices, by labels or by list
    api.include_router(rollouts.router)  # staged rollouts over cohorts, judged by gates
    api.include_router(alerts.router)  # alert rules over cohort metrics, alerts, webhook receivers
    api.include_router(drift.router)  # drift and labelled accuracy per cohort
    api.include_router(training.router)  # continuous training runs and labelled uploads
    app.include_router(api)
    # Added last, so it runs first: every later middleware, route and log record sees the request id.
    app.add_middleware(RequestIdMiddleware)
    return app

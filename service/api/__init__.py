"""HTTP routes, one module per resource; `ROUTERS` is what the app mounts."""

from __future__ import annotations

from service.api import admin, catalog, events, experiments, health, items, recommend

ROUTERS = (
    recommend.router,
    items.router,
    catalog.public_router,
    events.router,
    experiments.router,
    admin.router,
    catalog.admin_router,
    health.router,
)

"""FastAPI gateway: app factory + lifespan, routes, dependencies, error mapping."""

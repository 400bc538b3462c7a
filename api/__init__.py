"""FastAPI application: routes, middleware and the WebSocket endpoint."""

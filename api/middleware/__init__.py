"""Pure ASGI middlewares of the API: rate limits and idempotency keys."""

"""Infrastructure: settings, connection pools, cache, locks, outbox, tracing, embedded dev stack, CLI."""

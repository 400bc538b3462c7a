"""Durable and live events: the transactional outbox, its relay, dead letters, live publish/subscribe, external events.

May import ``db``, ``cache``, ``observability`` and ``constants``; never ``stores`` or ``sagas``.
"""

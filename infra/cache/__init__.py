"""Redis hot copies: key and channel names, cache-aside / write-through copies, invalidation.

Imports nothing else from ``infra`` but ``observability`` (hit/miss metrics): events, stores, sagas and
security build on it.
"""

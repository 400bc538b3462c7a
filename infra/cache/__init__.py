"""Redis hot copies: key and channel names, cache-aside / write-through copies, invalidation.

Imports nothing else from ``infra``: events, stores, sagas and security build on it.
"""

"""Tracing (OpenTelemetry spans to PostgreSQL, slow-span alerts); metrics will join it.

Imports nothing else from ``infra``, so every other subpackage may use it.
"""

"""Observability of every process: traces, metrics, logs.

``tracing`` (OpenTelemetry spans to PostgreSQL and OTLP), ``spans`` (span kinds, the span duration
metric, slow-span alerts), ``metrics`` (every Prometheus metric, declared in one module, and the
metrics ports), ``logs`` (text or JSON log lines with trace, tenant and submission ids) and
``spantree`` (a stored trace as a tree with durations).

Imports nothing else from ``infra``, so every other subpackage may use it.
"""

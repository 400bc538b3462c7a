"""Infrastructure of every gradeflow process, by concern.

The process-wide pieces stay at the top (``settings``, ``constants``, ``cli``); each subpackage owns one
concern and imports only the ones below it: ``db`` ← ``cache`` ← ``events`` ← ``stores`` ← ``sagas``;
``security``, ``observability`` and ``temporal`` stand beside them; ``stack`` (embedded
services, dev supervisor, preflight) sits on ``db``.
"""

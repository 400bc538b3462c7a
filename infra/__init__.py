"""Infrastructure of every gradeflow process, by concern.

The process-wide pieces stay at the top (``settings``, ``constants``, ``cli``); each subpackage owns one
concern and imports only the ones below it: ``observability`` ← ``db`` ← ``cache`` ← ``events`` ←
``stores`` ← ``sagas``, ``temporal`` and ``webhooks``; ``security`` sits on ``cache``; ``stack`` (embedded services,
dev supervisor, preflight) on ``db``; ``client`` (the CLI's API client) talks HTTP and imports none.
"""

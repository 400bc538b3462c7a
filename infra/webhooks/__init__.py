"""Signed webhooks: URL checks (SSRF), Standard Webhooks signing, the relay's fan-out and the dispatcher.

Sits beside ``sagas`` and ``temporal``: may import ``stores`` and everything below it. The SQL is in
:mod:`infra.stores.webhooks`; the API routes are in :mod:`api.routes.webhooks`.
"""

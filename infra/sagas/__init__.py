"""Multi-step changes with compensations, recorded in ``saga_transactions`` (the review override).

May import ``stores``, ``events``, ``cache``, ``db`` and ``observability``; nothing imports sagas but the
API.
"""

"""Multi-step changes with compensations, recorded in ``saga_transactions`` (the review override).

May import ``stores``, ``events``, ``cache`` and ``db``; nothing imports sagas but the API.
"""

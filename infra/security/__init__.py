"""Who may do what and how often: bearer tokens and per-tenant rate limits.

May import ``cache`` (key names) and ``observability`` (refusal metrics) only.
"""

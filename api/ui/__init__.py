"""The browser dashboard under ``/ui``: server-rendered page shells (Jinja2) and a little vanilla JS.

The pages hold no data of their own: their scripts (``static/``) keep the bearer token in
sessionStorage (localStorage when the user asks to be remembered), read the ``/v1`` API with it and
follow the ``/v1/ws`` live feeds (``?token=``). Nothing is loaded from a CDN and nothing is built.

:func:`install_ui` mounts the pages, their static files, the redirect of ``/`` to ``/ui`` and, outside
prod, ``POST /v1/dev/token`` (:mod:`api.ui.dev_token`) that the sign-in page's dev button calls.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.ui.dev_token import dev_tokens_enabled, install_dev_token
from api.ui.pages import STATIC_DIR, STATIC_URL, router


def install_ui(app: FastAPI) -> None:
    """Add the dashboard to ``app`` (after :func:`api.openapi.install_openapi`, whose document it amends)."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.include_router(router)
    if dev_tokens_enabled(app.state.settings):
        install_dev_token(app)


__all__ = ["install_ui"]

"""A real uvicorn server for the API, run inside the test's event loop on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def running_server(app: Any, *, startup_timeout: float = 30.0, settings: Any = None) -> AsyncIterator[str]:
    """Serve ``app`` (its real lifespan included) with uvicorn; yield the base URL ``http://host:port``.

    With ``settings`` the server is configured exactly as ``gradeflow api`` configures it
    (:func:`api.app.uvicorn_config`: proxy headers, log level), on a free port of 127.0.0.1.
    """
    port = _free_port()
    if settings is not None:
        from api.app import uvicorn_config

        config = uvicorn_config(app, settings, host="127.0.0.1", port=port)
    else:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                ws="websockets-sansio")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + startup_timeout
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn exited during start-up")
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("uvicorn did not start in time")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)


def serve_app(settings: Any, temporal_client: Any, task_queue: str) -> Any:
    """Context manager: the real app (real lifespan) on a free port, grading on ``task_queue``; yields the URL."""
    from api.app import create_app

    app = create_app(settings, temporal_client=temporal_client,
                     grading_options={"task_queue": task_queue, "cognitive_queue": f"{task_queue}-cog"})
    return running_server(app)

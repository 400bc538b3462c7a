"""Readiness reads the free space of the data folder's disk: low is ``degraded``, not ``unavailable``."""

from __future__ import annotations

import httpx

from tests.integration.api.server import serve_app


async def test_low_disk_makes_readiness_degraded(app_settings, temporal_client, task_queue, tmp_path):
    settings = app_settings.model_copy(update={"min_free_disk_mb": 2.0**40, "data_dir": tmp_path / "data"})
    async with serve_app(settings, temporal_client, task_queue) as url, httpx.AsyncClient(base_url=url) as http:
        ready = await http.get("/v1/health/ready")
        metrics = (await http.get("/metrics")).text
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded" and body["checks"]["database"] == "ok"
    assert body["checks"]["disk"].startswith("low: ") and "MiB free" in body["checks"]["disk"]
    assert "gradeflow_data_dir_free_bytes " in metrics  # the same disk, as a gauge

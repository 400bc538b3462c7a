"""/docs and /redoc through the real API: pages whose scripts and styles are served by the API itself."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest


def asset_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)=["']([^"']+\.(?:js|css))["']""", html) + \
        re.findall(r"""(?:url|redoc_js_url)\s*[:=]\s*["']([^"']+\.js)["']""", html)


@pytest.mark.parametrize(("page", "expected"), [
    ("/docs", {"javascript": "swagger-ui-bundle.js", "css": "swagger-ui.css"}),
    ("/redoc", {"javascript": "redoc.standalone.js"}),
])
async def test_docs_pages_load_their_assets_from_the_api(client, page, expected):
    resp = await client.get(page)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    html = resp.text
    assert "cdn." not in html and "fonts.googleapis" not in html, html
    urls = set(asset_urls(html))
    assert urls, html
    seen = set()
    for url in urls:
        assert not urlsplit(url).netloc and url.startswith("/docs/assets/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        kind = "css" if url.endswith(".css") else "javascript"
        assert kind in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > 10_000, url
        seen.add(url.rsplit("/", 1)[1])
    assert set(expected.values()) <= seen
    spec = await client.get("/openapi.json")
    assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.")


async def test_unknown_docs_asset_is_a_404(client):
    resp = await client.get("/docs/assets/nope.js")
    assert resp.status_code == 404

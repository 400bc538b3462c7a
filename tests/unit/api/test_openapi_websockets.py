"""The API description documents the WebSocket feeds that OpenAPI cannot: routes, auth, messages, resume."""

from __future__ import annotations

import json
import re

from api import openapi
from api.app import create_app
from api.routes import ws
from infra.settings import Settings


def _description() -> str:
    app = create_app(Settings(env="test"))
    return str(app.openapi()["info"]["description"])


def test_the_description_names_both_feeds_and_their_served_routes() -> None:
    text = _description()
    served = {str(getattr(route, "path", "")) for route in ws.router.routes}
    assert served == {"/v1/ws/submissions/{submission_id}", "/v1/ws/exams/{exam_id}"}
    for path in served:
        assert f"`WS {path}`" in text, path
    assert "?token=<JWT>" in text and "Authorization: Bearer <JWT>" in text
    assert "?last_event_id=" in text


def test_every_close_code_of_the_feeds_is_explained() -> None:
    text = _description()
    for code in (ws.CLOSE_UNAUTHENTICATED, ws.CLOSE_FORBIDDEN, ws.CLOSE_NOT_FOUND, ws.CLOSE_TOO_MANY_FEEDS,
                 ws.CLOSE_UNAVAILABLE):
        assert f"**{code}**" in text, code


def test_the_example_messages_have_the_feeds_message_shape() -> None:
    text = _description()
    blocks = re.findall(r"```json\n(.*?)\n```", text, re.DOTALL)
    examples = [json.loads(block) for block in blocks]
    assert [e["event_type"] for e in examples] == ["snapshot", "grading.progress", "submission.graded",
                                                   "batch.progress"]
    for example in examples:
        assert tuple(example) == ws.MESSAGE_FIELDS, example
        assert f"`{example['event_type']}`" in text
    assert examples == list(openapi.WS_EXAMPLES.values())

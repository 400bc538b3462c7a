"""``gradeflow webhooks`` as a subprocess against the real served API: add (the secret printed once), list,
deliveries, rotate-secret, enable, delete, and one-line errors."""

from __future__ import annotations

import re

from infra.security.tokens import mint_token
from infra.webhooks.fanout import webhook_fanout
from tests.integration.api.conftest import api_url  # noqa: F401 - fixture
from tests.integration.cli.test_cli_client import cli, client_env, one_line_error
from tests.integration.infra.webhooks.support import emit

SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]{40,}")


async def test_webhooks_commands(api_url, services, app_settings, tenant_id, pools) -> None:  # noqa: F811
    env = client_env(services, api_url, mint_token(app_settings, tenant=tenant_id, roles=["admin"]))
    added = await cli(env, "webhooks", "add", "http://127.0.0.1:9/hooks", "--event", "submission.graded",
                      "--event", "submission.reviewed", "--description", "LMS")
    assert added.returncode == 0, added.stderr
    hook_id = re.search(r"webhook ([0-9a-f-]{36}) added", added.stdout).group(1)
    [secret] = SECRET.findall(added.stdout)

    listed = await cli(env, "webhooks", "list")
    assert listed.returncode == 0 and hook_id in listed.stdout and "active" in listed.stdout
    assert "whsec_" not in listed.stdout

    [event] = await emit(pools, tenant_id, 1)
    await webhook_fanout(pools)(event)
    shown = await cli(env, "webhooks", "deliveries", hook_id)
    assert shown.returncode == 0 and event.event_id in shown.stdout and "pending" in shown.stdout
    none = await cli(env, "webhooks", "deliveries", hook_id, "--status", "delivered")
    assert none.returncode == 0 and none.stdout.strip() == "no deliveries"

    rotated = await cli(env, "webhooks", "rotate-secret", hook_id)
    assert rotated.returncode == 0, rotated.stderr
    [new_secret] = SECRET.findall(rotated.stdout)
    assert new_secret != secret and "previous secret signs too until" in rotated.stdout
    enabled = await cli(env, "webhooks", "enable", hook_id)
    assert enabled.returncode == 0 and f"webhook {hook_id} is active" in enabled.stdout
    deleted = await cli(env, "webhooks", "delete", hook_id)
    assert deleted.returncode == 0 and f"webhook {hook_id} deleted" in deleted.stdout

    one_line_error(await cli(env, "webhooks", "delete", hook_id), 2, "delete webhook", "404")
    one_line_error(await cli(env, "webhooks", "add", "ftp://example.com/x", "--event", "*"), 2, "add webhook", "url")
    reviewer = client_env(services, api_url, mint_token(app_settings, tenant=tenant_id, roles=["reviewer"]))
    one_line_error(await cli(reviewer, "webhooks", "list"), 2, "403", "GRADEFLOW_TOKEN")

"""List and mapping settings (JSON in the environment) that are unparseable or out of range are one line
naming the setting, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("GRADEFLOW_WEBHOOK_RETRY_SCHEDULE", "oops", "GRADEFLOW_WEBHOOK_RETRY_SCHEDULE: cannot be parsed"),
    ("GRADEFLOW_WEBHOOK_RETRY_SCHEDULE", "[5, -1]", "GRADEFLOW_WEBHOOK_RETRY_SCHEDULE[1]: Input should be greater"),
    ("GRADEFLOW_WEBHOOK_RETRY_SCHEDULE", "[]", "GRADEFLOW_WEBHOOK_RETRY_SCHEDULE: List should have at least 1"),
    ("GRADEFLOW_WEBHOOK_RETRY_JITTER", "1.5", "GRADEFLOW_WEBHOOK_RETRY_JITTER: Input should be less than 1"),
    ("GRADEFLOW_WEBHOOK_TIMEOUT", "0", "GRADEFLOW_WEBHOOK_TIMEOUT: Input should be greater than 0"),
    ("GRADEFLOW_SLOW_SPAN_MS_BY_KIND", "{not json", "GRADEFLOW_SLOW_SPAN_MS_BY_KIND: cannot be parsed"),
])
def test_a_bad_list_or_mapping_setting_is_one_line_naming_it(variable: str, value: str, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADEFLOW_")}
    env[variable] = value
    result = subprocess.run([sys.executable, "-m", "infra.cli", "token", "--tenant", "t"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"gradeflow: invalid setting: {expected}"), line

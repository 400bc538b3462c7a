"""Fixtures of the grading workflow tests (defined in harness so property tests can import them)."""

from tests.integration.workflows.harness import gf_settings, saver  # noqa: F401

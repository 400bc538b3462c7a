"""A workflow that only logs through ``workflow.logger`` (its own module, so it runs sandboxed)."""

from __future__ import annotations

from temporalio import workflow


@workflow.defn(name="TracingLogProbe")
class TracingLogProbe:
    """Logs one line; the tracing tests check it carries the caller's trace id."""

    @workflow.run
    async def run(self, note: str) -> str:
        """Log ``note`` and return it."""
        workflow.logger.info("probe %s", note)
        return note

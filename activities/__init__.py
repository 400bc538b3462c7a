"""Temporal activities: everything that does I/O on behalf of a workflow."""

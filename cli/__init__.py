"""The ``agent-ng`` command."""

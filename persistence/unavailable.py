"""The error every checkpoint store raises when its database cannot be reached in time.

Its own module so that the store's code (``agent_ng.persistence.pg_reconnect``, the thread locks)
and the service, which answers it with a 503 or a ``run_end`` error, share it without importing
each other.
"""


class CheckpointUnavailableError(RuntimeError):
    """The checkpoint database cannot be reached or did not answer in time; the message is one
    line naming it. A write it stopped may or may not have been stored (the writes are upserts,
    so doing it again is safe)."""

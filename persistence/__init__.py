"""Where threads live: checkpointers by URL, retention, thread locks, thread operations."""

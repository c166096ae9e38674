"""This process's identity as the holder of runs: ``REPLICA_ID``.

A run's record names the replica that holds it, and a replica taking a run over fences that
holder out and may end its connections to PostgreSQL (they carry ``REPLICA_ID`` in their
``application_name``). So the id must never be shared: not by two processes on one machine
(the pid), nor by a process and the one restarted after it with the same pid, as in a container
where every start is pid 1 (six random hex digits). A restarted process is a new holder: it
does not hold the runs of the one that died, and nothing taken from that one is refused to it.

It stays short, ``<hostname, first 24 characters>:<pid>:<6 hex digits>``, because PostgreSQL
cuts ``application_name`` to 63 bytes and the id must survive that whole. It is made at import:
worker processes must be started fresh (uvicorn's ``--workers`` spawns them), not forked from a
process that has imported it.

    from agent_ng.persistence.replica import REPLICA_ID   # "web-7f9c:4312:a1b2c3"
"""

from __future__ import annotations

import os
import secrets
import socket

REPLICA_ID: str = f"{socket.gethostname()[:24]}:{os.getpid()}:{secrets.token_hex(3)}"
"""This process's identity as a run holder, made once at import (unique per process and start)."""

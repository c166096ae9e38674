"""Browsers on other origins (LangGraph Studio, agent-chat-ui) may call the service: CORS for the
origins ``AGENT_CORS_ORIGINS`` names, off by default.

Starlette's ``CORSMiddleware`` does the work, private-network access included: a page on a
public origin (Studio at ``smith.langchain.com``) asking a loopback or LAN address sends
``Access-Control-Request-Private-Network: true`` in its preflight and goes on only if the answer
allows it. The headers a LangGraph client reads from a response (a run's ``Content-Location``,
the pagination totals) are exposed to the page.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

EXPOSED = ("content-location", "location", "x-pagination-total", "x-pagination-next")


def cors(app: ASGIApp, origins: Sequence[str]) -> ASGIApp:
    """``app`` answering CORS for ``origins`` (``*``: any), private-network preflights allowed."""
    return CORSMiddleware(
        app,
        allow_origins=list(origins),
        allow_credentials="*" not in origins,
        allow_methods=["*"],
        allow_headers=["*"],
        allow_private_network=True,
        expose_headers=list(EXPOSED),
    )

"""The LangGraph Server API, under ``/langgraph``: the clients LangGraph users already have
(``langgraph_sdk``, ``RemoteGraph``, LangGraph Studio, ``agent-chat-ui``) drive this service.

    client = get_client(url="http://127.0.0.1:8000/langgraph")

It serves the agent as the one assistant (graph id ``agent``), on the same checkpointer, event
log, thread locks, tool engine and API key as the rest of the service, so a thread is one thread
whichever route, client or command continues it.
"""

from fastapi import APIRouter

from agent_ng.service.langgraph_server import assistants, runs, threads

PREFIX = "/langgraph"

router = APIRouter(prefix=PREFIX)
router.include_router(assistants.router)
router.include_router(threads.router)
router.include_router(runs.router)

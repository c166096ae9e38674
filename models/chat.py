"""The chat model: ``ChatOpenAI`` when a key or a base URL is configured, else the offline model.

``OPENAI_BASE_URL`` alone is enough for a local OpenAI-compatible server (vLLM, Ollama,
llama.cpp), which usually needs no key.
"""

from __future__ import annotations

import logging

from langchain_core.language_models import BaseChatModel

from agent_ng.settings import Settings

log = logging.getLogger("agent_ng")

OFFLINE_NOTICE = "agent-ng: no OPENAI_API_KEY or OPENAI_BASE_URL set; using the offline model."


def chat_model(settings: Settings) -> BaseChatModel:
    if settings.openai_api_key or settings.openai_base_url:
        return openai_model(settings)
    from agent_ng.models.offline import OfflineChatModel

    log.warning(OFFLINE_NOTICE)
    return OfflineChatModel()


def openai_model(settings: Settings) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed"
    return ChatOpenAI(
        model=settings.model,
        api_key=key,
        base_url=settings.openai_base_url,
        streaming=True,
        stream_usage=True,
    )

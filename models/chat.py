"""The chat model ``AGENT_MODEL`` names: any LangChain chat model, as ``provider:model``.

``AGENT_MODEL`` takes LangChain's ``init_chat_model`` form (``anthropic:claude-sonnet-4-5``,
``ollama:llama3.1``), so every provider LangChain knows works once its integration package is
installed; a missing package is one line naming it, not a traceback.

OpenAI is the default and needs no prefix: a plain name (``gpt-4o-mini``) means ``openai:NAME``,
never a provider guessed from the name as ``init_chat_model`` would (``mistral-7b`` served by a
local server must not go to Mistral's API). It is ``ChatOpenAI`` when a key or a base URL is
configured, else the offline model; ``OPENAI_BASE_URL`` alone is enough for a local
OpenAI-compatible server (vLLM, Ollama, llama.cpp), which usually needs no key. A prefix is a
provider only if LangChain knows it, so an Ollama tag such as ``llama3.1:8b`` stays a model name.

``ChatOpenAI`` gets ``AGENT_MODEL_TIMEOUT_S`` as its connect timeout and no per-chunk timeout of
its own: the model node bounds every model's silence itself (``agent_ng.nodes.llm``), and
langchain-openai's per-chunk ``asyncio.wait_for`` costs a task per chunk and, on Python 3.11,
can swallow a stop.
"""

from __future__ import annotations

import logging

from langchain_core.language_models import BaseChatModel

from agent_ng.settings import Settings

log = logging.getLogger("agent_ng")

OFFLINE_NOTICE = "agent-ng: no OPENAI_API_KEY or OPENAI_BASE_URL set; using the offline model."
OPENAI = "openai"


class ModelConfigError(ValueError):
    """The configured model cannot be made (a missing provider package, an unusable setting).

    A ``ValueError`` like ``McpConfigError``: a setting to fix, said in one line."""


class ModelTimeoutError(TimeoutError):
    """The model sent nothing for ``AGENT_MODEL_TIMEOUT_S``: before its first chunk, or between two."""

    def __init__(self, model: str, timeout_s: float, received: int) -> None:
        when = f"after chunk {received}" if received else "before its first chunk"
        super().__init__(f"model {model!r} sent nothing for {timeout_s:g} s {when} (AGENT_MODEL_TIMEOUT_S)")


def chat_model(settings: Settings, model: str | None = None) -> BaseChatModel:
    """The chat model ``model`` (default: ``settings.model``, i.e. ``AGENT_MODEL``) names."""
    spec = settings.model if model is None else model
    label = f"AGENT_MODEL={spec}" if model is None else f"model {spec!r}"
    provider, name = split_model(spec, label)
    if provider != OPENAI:
        return provider_model(provider, name, label)
    if settings.openai_api_key or settings.openai_base_url:
        return openai_model(settings, name)
    from agent_ng.models.offline import OfflineChatModel

    log.warning(OFFLINE_NOTICE)
    return OfflineChatModel()


def model_name(model: BaseChatModel) -> str:
    """The model's name as its provider knows it (``gpt-4o-mini``), else its LangChain type."""
    for attribute in ("model_name", "model"):
        if isinstance(name := getattr(model, attribute, None), str) and name:
            return name
    return model._llm_type


def resolve_model(model: BaseChatModel | str | None, settings: Settings) -> BaseChatModel:
    """A model given as is, a ``provider:model`` string's model, or the one ``settings`` name."""
    if model is None or isinstance(model, str):
        return chat_model(settings, model or None)
    return model


def split_model(spec: str, label: str = "") -> tuple[str, str]:
    """``(provider, model name)``: ``openai`` unless the text before the first ``:`` is a provider."""
    prefix, colon, rest = spec.partition(":")
    if not colon or prefix == OPENAI:
        return OPENAI, rest if colon else spec
    if prefix in known_providers(label or f"AGENT_MODEL={spec}"):
        return prefix, rest
    return OPENAI, spec


def known_providers(label: str) -> frozenset[str]:
    """The providers ``init_chat_model`` accepts as a ``provider:`` prefix (its registry)."""
    base = langchain_chat_models(label)
    return frozenset(getattr(base, "_BUILTIN_PROVIDERS", ())) | {OPENAI}


def langchain_chat_models(label: str):
    """``langchain.chat_models.base``, home of ``init_chat_model``; a clear error without it."""
    try:
        from langchain.chat_models import base
    except ImportError as e:
        raise ModelConfigError(f"{label} needs the langchain package: pip install langchain") from e
    return base


def provider_model(provider: str, name: str, label: str) -> BaseChatModel:
    """``init_chat_model``'s model for ``provider``: its package reads its own settings (keys...)."""
    base = langchain_chat_models(label)
    try:
        return base.init_chat_model(name, model_provider=provider)
    except ImportError as e:
        module = base._BUILTIN_PROVIDERS[provider][0]
        package = module.split(".", 1)[0].replace("_", "-")
        raise ModelConfigError(f"{label} needs the {package} package: pip install {package}") from e
    except Exception as e:  # pydantic's ValidationError, an SDK's missing-credentials error...
        raise ModelConfigError(f"{label} cannot be used: {' '.join(str(e).split())}") from e


def openai_model(settings: Settings, name: str) -> BaseChatModel:
    """``ChatOpenAI`` for model ``name`` on the configured key and base URL, streaming tokens and usage."""
    import httpx
    from langchain_openai import ChatOpenAI

    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed"
    return ChatOpenAI(
        model=name,
        api_key=key,
        base_url=settings.openai_base_url,
        streaming=True,
        stream_usage=True,
        timeout=httpx.Timeout(None, connect=settings.model_timeout_s),
        stream_chunk_timeout=None,
    )

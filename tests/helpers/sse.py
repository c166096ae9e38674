"""Read a Server-Sent Events response in tests: events as (name, data, id), comments too."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx


@dataclass
class Frame:
    event: str | None
    data: dict | None
    comment: str | None = None
    id: str | None = None


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """Each event (data parsed as JSON) and each comment line (keep-alive pings), in order."""
    event, data, id = None, [], None
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield Frame(None, None, comment=line[1:].strip())
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("id:"):
            id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line == "" and data:
            yield Frame(event, json.loads("\n".join(data)), id=id)
            event, data, id = None, [], None


async def events(response: httpx.Response) -> AsyncIterator[Frame]:
    async for frame in frames(response):
        if frame.comment is None:
            yield frame

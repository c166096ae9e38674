"""Content decoding that never makes more than it is asked for: gzip, deflate, br and zstd.

httpx decodes each network chunk whole, so 64 KB of zstd can become gigabytes before any byte
limit is looked at. Here each call makes at most ``max_length`` bytes and keeps the input it
has not used yet, so the caller bounds what a body inflates to as it is decoded, and no call
holds the event loop for longer than it takes to make ``max_length`` bytes.

    async for piece in decoded(response.aiter_raw(), decoder_for("zstd"), 65_536):
        ...                                    # stop reading when there is enough
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

import brotli

try:
    from compression import zstd
except ImportError:  # Python < 3.14
    from backports import zstd

ERRORS = (zlib.error, brotli.error, zstd.ZstdError)
"""What a decoder raises on a body that is not what its encoding says."""


class Decoder(Protocol):
    """Decodes a body a bounded step at a time."""

    @property
    def needs_input(self) -> bool:
        """Whether all input given so far has been decoded; feed data only then, else ``b""``."""

    def decode(self, data: bytes, max_length: int) -> bytes:
        """At most ``max_length`` bytes of output; input not yet decoded is kept for the next call."""


class Identity:
    """No encoding: the body as it came, in steps like the others."""

    def __init__(self) -> None:
        self._pending = b""

    @property
    def needs_input(self) -> bool:
        return not self._pending

    def decode(self, data: bytes, max_length: int) -> bytes:
        pending = self._pending + data
        self._pending = pending[max_length:]
        return pending[:max_length]


class Zlib:
    """gzip and zlib-wrapped deflate; what follows the end of the stream is ignored, as httpx does."""

    def __init__(self, wbits: int) -> None:
        self._inflate = zlib.decompressobj(wbits)

    @property
    def needs_input(self) -> bool:
        return self._inflate.eof or not self._inflate.unconsumed_tail

    def decode(self, data: bytes, max_length: int) -> bytes:
        if self._inflate.eof:
            return b""
        return self._inflate.decompress(self._inflate.unconsumed_tail + data, max_length)


class Deflate(Zlib):
    """deflate: zlib-wrapped as the standard says, or raw as some servers send it."""

    def __init__(self) -> None:
        super().__init__(zlib.MAX_WBITS)
        self._started = False

    def decode(self, data: bytes, max_length: int) -> bytes:
        if self._started:
            return super().decode(data, max_length)
        self._started = True
        try:
            return super().decode(data, max_length)
        except zlib.error:
            self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            return super().decode(data, max_length)


class Zstd:
    """zstd, several frames in a row too."""

    def __init__(self) -> None:
        self._frame = zstd.ZstdDecompressor()

    @property
    def needs_input(self) -> bool:
        if self._frame.eof:
            return not self._frame.unused_data
        return self._frame.needs_input

    def decode(self, data: bytes, max_length: int) -> bytes:
        if self._frame.eof:
            data, self._frame = self._frame.unused_data + data, zstd.ZstdDecompressor()
            if not data:
                return b""
        return self._frame.decompress(data, max_length)


class Brotli:
    """br. Its output limit is a soft one (the buffer grows a block at a time), so what it makes
    past ``max_length`` is held back for the next call."""

    def __init__(self) -> None:
        self._stream = brotli.Decompressor()
        self._surplus = b""

    @property
    def needs_input(self) -> bool:
        return not self._surplus and self._stream.can_accept_more_data()

    def decode(self, data: bytes, max_length: int) -> bytes:
        if data or len(self._surplus) < max_length:
            self._surplus += self._stream.process(data, output_buffer_limit=max_length)
        out, self._surplus = self._surplus[:max_length], self._surplus[max_length:]
        return out


DECODERS = {
    "identity": Identity,
    "gzip": lambda: Zlib(zlib.MAX_WBITS | 16),
    "x-gzip": lambda: Zlib(zlib.MAX_WBITS | 16),
    "deflate": Deflate,
    "br": Brotli,
    "zstd": Zstd,
}
ACCEPT_ENCODING = "gzip, deflate, br, zstd"
"""What a request may say it takes: the encodings ``DECODERS`` decode."""


def decoder_for(content_encoding: str) -> Decoder:
    """The decoder for a ``Content-Encoding`` header (empty: none); ValueError for one it cannot
    decode, or for several layered (``gzip, br``)."""
    encoding = content_encoding.strip().lower() or "identity"
    if encoding not in DECODERS:
        raise ValueError(f"cannot decode content-encoding {content_encoding!r}; this fetch takes {ACCEPT_ENCODING}")
    return DECODERS[encoding]()


async def decoded(chunks: AsyncIterable[bytes], decoder: Decoder, step: int) -> AsyncIterator[bytes]:
    """The decoded body of raw ``chunks``, in pieces of at most ``step`` bytes: each chunk is fed
    once and its output drawn a step at a time, so a consumer that stops stops the inflating."""
    async for chunk in chunks:
        piece = decoder.decode(chunk, step)
        while piece:
            yield piece
            piece = b"" if decoder.needs_input else decoder.decode(b"", step)
    while piece := decoder.decode(b"", step):
        yield piece

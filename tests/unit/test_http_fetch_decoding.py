"""Bounded content decoding for ``http_fetch``: right output, and never more than a step at a time."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import brotli
import pytest

from agent_ng.tools.decoding import ACCEPT_ENCODING, DECODERS, ERRORS, decoded, decoder_for

try:
    from compression import zstd
except ImportError:
    from backports import zstd

STEP = 4096
TEXT = b"".join(b"line %d of a body that compresses well\n" % i for i in range(20_000))


def gzip(data: bytes) -> bytes:
    return zlib.compress(data, wbits=zlib.MAX_WBITS | 16)


def raw_deflate(data: bytes) -> bytes:
    return zlib.compress(data, wbits=-zlib.MAX_WBITS)


ENCODE = {
    "identity": lambda data: data,
    "gzip": gzip,
    "deflate": zlib.compress,
    "br": lambda data: brotli.compress(data, quality=5),
    "zstd": zstd.compress,
}


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def decode_all(encoding: str, body: bytes, chunk: int = 1000) -> list[bytes]:
    return [piece async for piece in decoded(chunks(body, chunk), decoder_for(encoding), STEP)]


@pytest.mark.parametrize("encoding", list(ENCODE))
async def test_each_encoding_decodes_in_bounded_pieces(encoding):
    pieces = await decode_all(encoding, ENCODE[encoding](TEXT))
    assert b"".join(pieces) == TEXT
    assert max(map(len, pieces)) <= STEP


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
async def test_one_small_chunk_of_a_bomb_inflates_only_as_far_as_it_is_read(encoding):
    """A 64 MiB body in one chunk of a few KiB: the first piece is one step, and a reader
    that stops after ten steps has made ten steps of output, not 64 MiB."""
    bomb = ENCODE[encoding](bytes(64 << 20))
    assert len(bomb) < 100_000
    made = 0
    async for piece in decoded(chunks(bomb, len(bomb)), decoder_for(encoding), STEP):
        made += len(piece)
        if made >= 10 * STEP:
            break
    assert made == 10 * STEP


async def test_raw_deflate_and_several_zstd_frames_are_decoded_as_browsers_do():
    assert b"".join(await decode_all("deflate", raw_deflate(TEXT))) == TEXT
    frames = zstd.compress(TEXT[:50_000]) + zstd.compress(TEXT[50_000:])
    assert b"".join(await decode_all("zstd", frames, chunk=777)) == TEXT


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
async def test_a_body_that_is_not_its_encoding_raises_a_decoding_error(encoding):
    with pytest.raises(ERRORS):
        await decode_all(encoding, b"this is not compressed at all" * 10)


@pytest.mark.parametrize("encoding", ["compress", "gzip, br", "sdch"])
def test_an_encoding_it_cannot_decode_is_refused_by_name(encoding):
    with pytest.raises(ValueError, match=f"cannot decode content-encoding '{encoding}'; this fetch takes gzip"):
        decoder_for(encoding)


def test_what_it_asks_for_is_what_it_decodes():
    assert {e.strip() for e in ACCEPT_ENCODING.split(",")} <= set(DECODERS)
    assert decoder_for("").needs_input and decoder_for(" GZIP ").needs_input

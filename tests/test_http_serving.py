"""How the hub's HTTP services send: an answer's head and body in one write (hub.http_serving)."""

from __future__ import annotations

import asyncio

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route
from uvicorn.server import ServerState

from hub import http_serving
from hub.http_serving import OneWriteHttpProtocol, OneWriteTransport


class RecordingTransport(asyncio.Transport):
    """A transport that keeps what is written to it, one item per write call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def test_writes_of_one_pass_of_the_loop_leave_as_one_after_it() -> None:
    async def scenario() -> list[list[bytes]]:
        raw = RecordingTransport()
        transport = OneWriteTransport(raw, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"body")
        seen = [list(raw.writes)]  # nothing yet: held for the rest of this pass
        await asyncio.sleep(0)
        seen.append(list(raw.writes))
        transport.write(b"next")
        await asyncio.sleep(0)
        seen.append(list(raw.writes))
        return seen

    assert asyncio.run(scenario()) == [[], [b"HTTP/1.1 200 OK\r\n\r\nbody"], [b"HTTP/1.1 200 OK\r\n\r\nbody", b"next"]]


def test_a_large_answer_goes_on_at_once_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_serving, "_HELD_MAX", 10)

    async def scenario() -> list[bytes]:
        raw = RecordingTransport()
        transport = OneWriteTransport(raw, asyncio.get_running_loop())
        transport.write(b"head;")
        transport.write(b"a body longer than ten bytes")
        assert raw.writes == [b"head;a body longer than ten bytes"]  # not held back
        transport.write(b"tail")
        await asyncio.sleep(0)
        return raw.writes

    assert asyncio.run(scenario()) == [b"head;a body longer than ten bytes", b"tail"]


def test_closing_sends_what_is_held_and_a_closed_connection_gets_nothing_more() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes]]:
        loop = asyncio.get_running_loop()
        first, second = RecordingTransport(), RecordingTransport()
        one = OneWriteTransport(first, loop)
        one.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        one.close()  # as uvicorn answers a malformed request: write, then close
        other = OneWriteTransport(second, loop)
        other.write(b"an answer to a client that went away")
        second.closed = True  # the peer closed before the end of the pass
        await asyncio.sleep(0)
        return first.writes, second.writes

    assert asyncio.run(scenario()) == ([b"HTTP/1.1 400 Bad Request\r\n\r\n"], [])


def test_writelines_and_the_end_of_the_stream_keep_the_order() -> None:
    class EndRecording(RecordingTransport):
        def write_eof(self) -> None:
            self.writes.append(b"<eof>")

    async def scenario() -> list[bytes]:
        raw = EndRecording()
        transport = OneWriteTransport(raw, asyncio.get_running_loop())
        transport.writelines([b"a", b"b"])
        transport.write_eof()
        await asyncio.sleep(0)
        return raw.writes

    assert asyncio.run(scenario()) == [b"ab", b"<eof>"]


def test_everything_else_is_the_transport_s_own() -> None:
    async def scenario() -> tuple[object, bool]:
        raw = RecordingTransport()
        transport = OneWriteTransport(raw, asyncio.get_running_loop())
        transport.pause_reading()
        return transport.get_extra_info("peername"), raw.reading

    assert asyncio.run(scenario()) == (("127.0.0.1", 40000), False)


def serve_one(app: Starlette, request: bytes) -> RecordingTransport:
    """``request`` through the protocol the hub's servers use, on a recording transport."""
    async def scenario() -> RecordingTransport:
        config = uvicorn.Config(app, http=OneWriteHttpProtocol, lifespan="off", log_level="warning")
        config.load()
        protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
        raw = RecordingTransport()
        protocol.connection_made(raw)
        protocol.data_received(request)
        while protocol.cycle is None or not protocol.cycle.response_complete:
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # the pass in which the held bytes leave
        protocol.connection_lost(None)
        return raw

    return asyncio.run(scenario())


def test_an_answer_leaves_the_server_in_one_write() -> None:
    async def hello(request):
        return PlainTextResponse("xin chào")

    raw = serve_one(Starlette(routes=[Route("/", hello)]), b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n")
    assert len(raw.writes) == 1, raw.writes
    head, _, body = raw.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and body == "xin chào".encode()


def test_a_streamed_answer_still_arrives_whole_and_in_order() -> None:
    async def chunks():
        for n in range(3):
            yield f"part {n};"
            await asyncio.sleep(0)

    async def stream(request):
        return StreamingResponse(chunks(), media_type="text/plain")

    raw = serve_one(Starlette(routes=[Route("/", stream)]), b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n")
    sent = b"".join(raw.writes)
    head, _, body = sent.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert [line for line in body.split(b"\r\n") if line.startswith(b"part")] == [b"part 0;", b"part 1;", b"part 2;"]
    assert body.endswith(b"0\r\n\r\n")

"""
A blocking GeeRPC client over a plain socket, for probing a real server from
outside its process (threads of a test, no reactor): gob or JSON, one call
at a time, with the raw bytes of a request under the test's control.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from txgeerpc._wire import GOB, Header, Option
from txgeerpc.codec import default_registry
from txgeerpc.gob._numbers import read_uint, uint_bytes


def frames(data: bytes) -> list[bytes]:
    """The payloads of a gob stream's messages."""
    result, pos = [], 0
    while pos < len(data):
        length, pos = read_uint(data, pos)
        result.append(data[pos : pos + length])
        pos += length
    return result


def joined(payloads: list[bytes]) -> bytes:
    return b"".join(uint_bytes(len(payload)) + payload for payload in payloads)


class RawClient:
    """One connection: ``call`` sends a request and waits for its reply."""

    def __init__(self, port: int, codec: str = GOB, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(Option(codec_type=codec).to_json())
        chosen = default_registry.get(codec)
        self.encoder = chosen.new_encoder()
        self.decoder = chosen.new_decoder(64 << 20)
        self.seq = 0

    def request(self, method: str, body: Any, body_type: Any = None) -> bytes:
        """The bytes of the next request (not sent)."""
        self.seq += 1
        return self.encoder.encode(Header(method, self.seq, ""), body, body_type)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[Header, Any]:
        """The next reply: (header, decoded body)."""
        header = None
        while True:
            message = self.decoder.next_message()
            if message is None:
                data = self.sock.recv(1 << 16)
                if not data:
                    raise ConnectionError("the server closed the connection")
                self.decoder.feed(data)
                continue
            if header is None:
                header = self.decoder.decode_header(message)
            else:
                return header, self.decoder.decode_body(message)

    def call(self, method: str, body: Any, body_type: Any = None) -> tuple[Header, Any, float]:
        """(reply header, body, seconds it took)."""
        started = time.perf_counter()
        self.send(self.request(method, body, body_type))
        header, value = self.reply()
        return header, value, time.perf_counter() - started

    def close(self) -> None:
        self.sock.close()

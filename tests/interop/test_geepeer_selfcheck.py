"""
Self-checks of geepeer, the Go GeeRPC peer the interop tests rely on: it must
read the recorded reference replies exactly, and its client and server must
agree with each other on both encoding/json engines.
"""

from __future__ import annotations

import errno
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ._geepeer import (
    EXPECTED_BASIC,
    SAMPLE_RECORD_JSON,
    GeepeerError,
    decode_replies,
    encode_requests,
    records_stdin,
    run_client,
    running_server,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"

DEFAULT_OPTION = (
    b'{"MagicNumber":3927900,"CodecType":"application/gob",'
    b'"ConnectTimeout":10000000000,"HandleTimeout":0}\n'
)


def _vector(name: str) -> bytes:
    path = VECTORS / name
    assert path.exists(), f"vector {path} is missing: tests/vectors/ is part of the repository"
    return path.read_bytes()


def _wide_option(magic: int = 3927900, codec: str = "application/gob") -> bytes:
    """An Option padded inside the braces to exactly 512 bytes, no newline.

    Both server builds consume exactly these 512 bytes (docs/protocol.md 3.3,
    vectors 17 and 18), so requests may follow in the same write.
    """
    head = (
        f'{{"MagicNumber":{magic},"CodecType":"{codec}",'
        '"ConnectTimeout":10000000000,"HandleTimeout":0'
    ).encode()
    option = head + b" " * (511 - len(head)) + b"}"
    assert len(option) == 512
    return option


def _raw_session(address: str, data: bytes, timeout: float = 30.0) -> bytes:
    """Send data, half-close, and return everything the server sends until it closes.

    A server that closes with request bytes still unread resets the connection;
    that counts as closing too.
    """
    host, port = address.rsplit(":", 1)
    received = bytearray()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                received += chunk
        except OSError as e:  # reset, broken pipe, or reset before our shutdown
            if e.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                raise
    return bytes(received)


def _reply(seq: int, method: str, reply: Any, error: str = "") -> dict[str, Any]:
    return {"ServiceMethod": method, "Seq": seq, "Error": error, "Reply": reply}


def test_decode_vector_01(geepeer: Path) -> None:
    assert decode_replies(geepeer, _vector("01-gob-tcp.s2c.bin")) == [
        _reply(1, "Foo.Sum", 3),
        _reply(2, "Arith.Multiply", 12),
        _reply(3, "Arith.Divide", None, "divide by zero"),
        _reply(4, "Foo.Nope", None, "rpc server: can't find method Nope"),
    ]


def test_decode_vector_03(geepeer: Path) -> None:
    assert decode_replies(geepeer, _vector("03-gob-handle-timeout.s2c.bin")) == [
        _reply(1, "Foo.Sleep", None, "rpc server: request handle timeout: expect within 250ms"),
        _reply(2, "Foo.Sum", 3),
        _reply(3, "Arith.Echo", "hi"),
    ]


def test_decode_replies_rejects_truncated_stream(geepeer_classic: Path) -> None:
    data = _vector("01-gob-tcp.s2c.bin")
    with pytest.raises(GeepeerError, match="unexpected EOF"):
        decode_replies(geepeer_classic, data[:-1])


def test_encode_requests_matches_vector_01(geepeer: Path) -> None:
    """The request stream geepeer encodes is byte-identical to the reference client's."""
    c2s = _vector("01-gob-tcp.c2s.bin")
    requests = [
        {"method": "Foo.Sum", "seq": 1, "arg": {"Num1": 1, "Num2": 2}},
        {"method": "Arith.Multiply", "seq": 2, "arg": {"Num1": 3, "Num2": 4}},
        {"method": "Arith.Divide", "seq": 3, "arg": {"Num1": 7, "Num2": 0}},
        {"method": "Foo.Nope", "seq": 4, "arg": {"Num1": 5, "Num2": 6}},
    ]
    assert c2s.startswith(DEFAULT_OPTION)
    assert DEFAULT_OPTION + encode_requests(geepeer, requests) == c2s


@pytest.mark.parametrize("server_engine", ["classic", "jsonv2"])
@pytest.mark.parametrize("client_engine", ["classic", "jsonv2"])
def test_go_client_go_server_basic(
    request: pytest.FixtureRequest, client_engine: str, server_engine: str
) -> None:
    client: Path = request.getfixturevalue(f"geepeer_{client_engine}")
    server_binary: Path = request.getfixturevalue(f"geepeer_{server_engine}")
    server = running_server(server_binary)
    with server as address:
        lines = run_client(client, address, "basic", wide_option=True)
    simple = [
        (x["case"], x["method"], x["reply"], x["error"]) for x in lines[: len(EXPECTED_BASIC)]
    ]
    assert simple == EXPECTED_BASIC

    record = lines[len(EXPECTED_BASIC)]
    assert record["case"] == "record"
    assert record["error"] == ""
    assert record["equal"] is True
    reply = record["reply"]
    for key in ("Name", "ID", "Score", "Active", "Data", "Tags", "Points", "Counts", "Z"):
        assert reply[key] == SAMPLE_RECORD_JSON[key], key
    # gob decodes the zero-length inner slice as a nil slice (JSON null).
    assert reply["Matrix"] == [[1.5, 2], None, [-0.25]]
    assert reply["Extra"] == {"type": "string", "value": "extra"}
    assert reply["Child"]["Child"]["Name"] == "grandchild"
    assert reply["Child"]["Child"]["Child"] is None

    concurrent = lines[len(EXPECTED_BASIC) + 1 :]
    assert len(concurrent) == 64
    assert {(x["case"], x["method"], x["error"]) for x in concurrent} == {
        ("concurrent", "Foo.Sum", "")
    }
    assert sorted(x["reply"] for x in concurrent) == [1001 * i for i in range(64)]
    assert "rpc server:" not in server.log


def test_go_client_go_server_timeout(geepeer: Path) -> None:
    with running_server(geepeer) as address:
        lines = run_client(geepeer, address, "timeout", wide_option=True)
    assert lines == [
        {
            "case": "sleep",
            "method": "Foo.Sleep",
            "reply": None,
            "error": "rpc server: request handle timeout: expect within 250ms",
        },
        {"case": "sum_after_timeout", "method": "Foo.Sum", "reply": 5, "error": ""},
    ]


def test_go_client_go_server_records(geepeer: Path) -> None:
    records: list[dict[str, Any]] = [
        SAMPLE_RECORD_JSON,
        {},
        {"Extra": {"type": "int", "value": -(2**63)}},
        {"Extra": {"type": "float64", "value": 0.1}},
        {"Extra": {"type": "bool", "value": True}},
        {"Extra": {"type": "[]string", "value": ["x", ""]}},
        {"Extra": {"type": "[]uint8", "value": "AAE="}},
        {"Extra": {"type": "[]int", "value": [1, -1]}},
        {"Extra": {"type": "nil", "value": None}},
        {"Child": {}, "Counts": {}, "Points": [{}], "Tags": []},
    ]
    with running_server(geepeer) as address:
        lines = run_client(geepeer, address, "records", records_stdin(records), wide_option=True)
    assert len(lines) == len(records)
    assert [(x["case"], x["error"], x["equal"]) for x in lines] == [("records", "", True)] * len(
        records
    )
    assert [x["reply"]["Extra"] for x in lines[2:9]] == [r["Extra"] for r in records[2:9]]
    last = lines[-1]["reply"]
    # A pointer to a zero struct, an empty non-nil map and a zero struct element
    # survive gob; an empty slice field does not (it is not transmitted).
    assert last["Child"] is not None and last["Child"]["Name"] == ""
    assert last["Counts"] == {}
    assert last["Points"] == [{"X": 0, "Y": 0}]
    assert last["Tags"] is None


def test_go_server_raw_requests(geepeer: Path) -> None:
    """Body decode errors and bad names get error replies and the stream goes on."""
    requests = [
        {"method": "Foo.Sum", "seq": 1, "arg": {"a": 1}, "type": "map"},
        {"method": "Foo.Sum", "seq": 2, "arg": {"Num1": 1, "Num2": 2}},
        {"method": "NoDot", "seq": 3, "arg": {"Num1": 1}},
        {"method": "a.b.C", "seq": 4, "arg": {"Num1": 1}},
        {"method": "Arith.Echo", "seq": 5, "arg": "x"},
        {"method": "Records.Keys", "seq": 6, "arg": {}},
    ]
    server = running_server(geepeer)
    with server as address:
        s2c = _raw_session(address, _wide_option() + encode_requests(geepeer, requests))
        replies = sorted(decode_replies(geepeer, s2c), key=lambda r: int(r["Seq"]))
        log = server.log
    assert [r["Seq"] for r in replies] == [1, 2, 3, 4, 5, 6]
    assert replies[0]["Error"].startswith("gob: type mismatch in decoder: want struct type")
    assert replies[0]["Reply"] is None
    assert replies[1:] == [
        _reply(2, "Foo.Sum", 3),
        _reply(3, "NoDot", None, "rpc server: service/method request ill-formed: NoDot"),
        _reply(4, "a.b.C", None, "rpc server: can't find service a.b"),
        _reply(5, "Arith.Echo", "x"),
        _reply(6, "Records.Keys", []),
    ]
    assert "rpc server: read body err: gob: type mismatch" in log


@pytest.mark.parametrize(
    ("option", "logged"),
    [
        (_wide_option(magic=0), "rpc server: invalid magic number 0"),
        (_wide_option(codec="application/json"), "rpc server: invalid codec type application/json"),
    ],
    ids=["bad-magic", "json-codec"],
)
def test_go_server_rejects_bad_option(geepeer: Path, option: bytes, logged: str) -> None:
    server = running_server(geepeer)
    with server as address:
        request = encode_requests(geepeer, [{"method": "Foo.Sum", "seq": 1, "arg": {}}])
        assert _raw_session(address, option + request) == b""
        # geepeer logs before it closes the connection, and stderr is a file:
        # by the time our read saw the close, the line is there.
        assert logged in server.log


def test_option_pause_flag(geepeer: Path) -> None:
    """-option-pause (timing based, unlike -wide-option) also avoids the read-ahead."""
    with running_server(geepeer) as address:
        lines = run_client(geepeer, address, "timeout", option_pause="200ms")
    assert [(x["case"], x["reply"]) for x in lines] == [("sleep", None), ("sum_after_timeout", 5)]


def test_go_server_reproduces_read_ahead_hazard(geepeer: Path) -> None:
    """A request sent in the same write as the default Option is lost (docs/protocol.md 3.3).

    Classic engine: the JSON decoder swallows the request and the server then
    sees EOF. JSONv2 engine: the gob decoder starts mid-message and fails.
    Either way no reply is sent, which is what the Python client tests rely on.
    """
    request = encode_requests(geepeer, [{"method": "Foo.Sum", "seq": 1, "arg": {"Num1": 1}}])
    with running_server(geepeer) as address:
        assert _raw_session(address, DEFAULT_OPTION + request) == b""


# -- HTTP mode (-http): the reference's HandleHTTP and DialHTTP, docs/protocol.md 6 --------

CONNECT_HEAD = b"CONNECT /_geeprc_ HTTP/1.0\n\n"
CONNECTED = b"HTTP/1.0 200 Connected to Gee RPC\n\n"


def _http_exchange(address: str, request: bytes, timeout: float = 30.0) -> bytes:
    """Send one HTTP request (it must ask the server to close) and read the answer."""
    host, port = address.rsplit(":", 1)
    received = bytearray()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            received += chunk
    return bytes(received)


def _head_and_body(response: bytes) -> tuple[list[bytes], dict[bytes, bytes], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.lower()] = value.strip()
    return status.split(b" ", 2), headers, body


@pytest.mark.parametrize("scenario", ["basic", "timeout"])
def test_go_http_client_go_http_server(geepeer: Path, scenario: str) -> None:
    server = running_server(geepeer, http=True)
    with server as address:
        lines = run_client(geepeer, address, scenario, http=True, wide_option=True)
    if scenario == "timeout":
        assert [(x["case"], x["reply"], x["error"]) for x in lines] == [
            ("sleep", None, "rpc server: request handle timeout: expect within 250ms"),
            ("sum_after_timeout", 5, ""),
        ]
    else:
        simple = [
            (x["case"], x["method"], x["reply"], x["error"]) for x in lines[: len(EXPECTED_BASIC)]
        ]
        assert simple == EXPECTED_BASIC
        assert lines[len(EXPECTED_BASIC)]["equal"] is True
        assert sorted(x["reply"] for x in lines[len(EXPECTED_BASIC) + 1 :]) == [
            1001 * i for i in range(64)
        ]
    assert "rpc server:" not in server.log


def test_go_http_server_plain_http_answers(geepeer: Path) -> None:
    """405 on the RPC path exactly as vector 08 (not http.Error: no nosniff
    header), the debug page, and 404 for the unmerged rename's path."""
    with running_server(geepeer, http=True) as address:
        refused = _http_exchange(
            address,
            f"GET /_geeprc_ HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode(),
        )
        page = _http_exchange(address, b"GET /debug/geerpc HTTP/1.0\r\n\r\n")
        renamed = _http_exchange(address, b"CONNECT /_geerpc_ HTTP/1.0\n\n")
    status, headers, body = _head_and_body(refused)
    assert status == [b"HTTP/1.1", b"405", b"Method Not Allowed"]
    assert sorted(headers) == [b"connection", b"content-length", b"content-type", b"date"]
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert body == b"405 must CONNECT\n"
    status, headers, body = _head_and_body(page)
    assert status[1] == b"200" and headers[b"content-type"] == b"text/html; charset=utf-8"
    assert b"GeeRPC Services" in body and b"Service Records" in body
    assert _head_and_body(renamed)[0][1] == b"404"


@pytest.mark.parametrize(
    "head",
    [
        CONNECT_HEAD,
        b"CONNECT /_geeprc_ HTTP/1.0\r\n\r\n",
        b"CONNECT /_geeprc_ HTTP/1.1\r\n\r\n",
        b"CONNECT /_geeprc_ HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["reference", "crlf", "http11", "http11-host"],
)
def test_go_http_server_connect_then_stream(geepeer: Path, head: bytes) -> None:
    """The 200 line is exactly the reference's 35 bytes whatever the variant
    (docs/protocol.md 6), then the stream works once the client waited for it."""
    request = encode_requests(geepeer, [{"method": "Foo.Sum", "seq": 1, "arg": {"Num1": 1}}])
    with running_server(geepeer, http=True) as address:
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(head)
            answer = b""
            while not answer.endswith(b"\n\n"):
                chunk = sock.recv(1)
                assert chunk, answer
                answer += chunk
            sock.sendall(_wide_option() + request)
            sock.shutdown(socket.SHUT_WR)
            rest = bytearray()
            while chunk := sock.recv(65536):
                rest += chunk
    assert answer == CONNECTED
    assert decode_replies(geepeer, bytes(rest)) == [_reply(1, "Foo.Sum", 1)]


def test_go_http_server_loses_bytes_sent_with_connect_head(geepeer: Path) -> None:
    """Vector 19 (defect 2, kept on purpose): CONNECT, Option and request in one
    write get the 200 line and nothing else; the server then reads EOF."""
    request = encode_requests(geepeer, [{"method": "Foo.Sum", "seq": 1, "arg": {"Num1": 1}}])
    server = running_server(geepeer, http=True)
    with server as address:
        assert _raw_session(address, CONNECT_HEAD + DEFAULT_OPTION + request) == CONNECTED
        assert "rpc server: options error:  EOF" in server.log


def test_go_http_client_sends_the_reference_head_and_checks_the_status(
    geepeer_classic: Path,
) -> None:
    """The client's head is vector 06's 28 bytes; any status but ``200
    Connected to Gee RPC`` fails the dial (exit 1), as in the reference."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(30)
        port = listener.getsockname()[1]
        process = subprocess.Popen(
            [str(geepeer_classic), "client", "-addr", f"127.0.0.1:{port}", "-http"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(30)
                head = b""
                while not head.endswith(b"\n\n"):
                    chunk = conn.recv(1)
                    assert chunk, head
                    head += chunk
                conn.sendall(b"HTTP/1.0 200 OK\n\n")
                stdout, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()  # this PID only
            process.communicate()
    assert head == CONNECT_HEAD
    assert (process.returncode, stdout) == (1, b"")
    assert b"unexpected HTTP response: 200 OK" in stderr


def test_go_http_client_dumps(geepeer: Path, tmp_path: Path) -> None:
    """Over HTTP, -dump-s2c starts with the 200 line, -dump-c2s after the Option."""
    c2s, s2c = tmp_path / "c2s.bin", tmp_path / "s2c.bin"
    with running_server(geepeer, http=True) as address:
        run_client(
            geepeer,
            address,
            "timeout",
            http=True,
            wide_option=True,
            extra_args=["-dump-c2s", str(c2s), "-dump-s2c", str(s2c)],
        )
    received = s2c.read_bytes()
    assert received.startswith(CONNECTED)
    assert [r["Seq"] for r in decode_replies(geepeer, received[len(CONNECTED) :])] == [1, 2]
    first = encode_requests(geepeer, [{"method": "Foo.Sleep", "seq": 1, "arg": {"Num1": 1}}])
    assert c2s.read_bytes().startswith(first)

"""
etcd's JSON gateway without I/O: request bodies, answers, and the splitting
of a watch stream into messages wherever its segments are cut.
"""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc.errors import EtcdAnswerTooLarge, EtcdError
from txgeerpc.etcd import KeyValue, WatchEvent
from txgeerpc.etcd import _gateway as gateway

# Three messages as a 3.4 member streams them for a watch: created, a put, a
# delete (the "type" of a put is left out: it is the enum's default).
WATCH_STREAM = (
    b'{"result":{"header":{"cluster_id":"1","member_id":"2","revision":"4","raft_term":"2"},'
    b'"created":true}}\n'
    b'{"result":{"header":{"revision":"5"},"events":[{"kv":{"key":"L2dlZXJwYy9i",'
    b'"create_revision":"5","mod_revision":"5","version":"1","value":"eA==","lease":"7"}}]}}\n'
    b'{"result":{"header":{"revision":"6"},"events":[{"type":"DELETE","kv":{"key":"L2dlZXJwYy9i",'
    b'"mod_revision":"6"}}]}}\n'
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class PrefixEndTests(SynchronousTestCase):
    def test_last_byte_incremented(self) -> None:
        self.assertEqual(gateway.prefix_end(b"/geerpc/"), b"/geerpc0")

    def test_trailing_ff_bytes_dropped(self) -> None:
        self.assertEqual(gateway.prefix_end(b"a\xff\xff"), b"b")

    def test_all_ff_means_every_key_after(self) -> None:
        self.assertEqual(gateway.prefix_end(b"\xff"), b"\0")

    def test_empty_prefix_refused(self) -> None:
        self.assertRaises(ValueError, gateway.prefix_end, b"")


class RequestTests(SynchronousTestCase):
    def test_put_without_lease_leaves_it_out(self) -> None:
        self.assertEqual(
            gateway.put_request(b"k", b"v", 0), {"key": _b64(b"k"), "value": _b64(b"v")}
        )

    def test_put_with_lease_as_string(self) -> None:
        self.assertEqual(gateway.put_request(b"k", b"v", 2**62)["lease"], str(2**62))

    def test_prefix_range(self) -> None:
        request = gateway.range_request(b"/p/", prefix=True, count_only=True)
        self.assertEqual(
            request, {"key": _b64(b"/p/"), "range_end": _b64(b"/p0"), "count_only": True}
        )

    def test_create_compares_create_revision_with_zero(self) -> None:
        request = gateway.create_request(b"k", b"v", 9)
        self.assertEqual(
            request["compare"],
            [{"key": _b64(b"k"), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
        )
        self.assertEqual(request["success"][0]["request_put"]["lease"], "9")
        self.assertEqual(request["failure"], [{"request_range": {"key": _b64(b"k")}}])

    def test_watch_resumes_from_a_revision(self) -> None:
        create = gateway.watch_request(b"/p/", 42)["create_request"]
        self.assertEqual(create["start_revision"], "42")
        self.assertEqual(create["range_end"], _b64(b"/p0"))


class AnswerTests(SynchronousTestCase):
    def test_range_with_defaults_left_out(self) -> None:
        answer = {
            "header": {"revision": "12"},
            "kvs": [{"key": _b64(b"a"), "create_revision": "3", "mod_revision": "3"}],
        }
        found = gateway.range_answer(answer)
        self.assertEqual(found.revision, 12)
        self.assertEqual(found.kvs, (KeyValue(b"a", b"", 3, 3, 0, 0),))

    def test_empty_range(self) -> None:
        self.assertEqual(gateway.range_answer({"header": {"revision": "1"}}).kvs, ())

    def test_created(self) -> None:
        self.assertIsNone(gateway.create_answer({"succeeded": True}))

    def test_not_created_answers_the_existing_key(self) -> None:
        answer = {
            "responses": [{"response_range": {"kvs": [{"key": _b64(b"k"), "value": _b64(b"old")}]}}]
        }
        existing = gateway.create_answer(answer)
        assert existing is not None
        self.assertEqual(existing.value, b"old")

    def test_unary_error(self) -> None:
        answer = {
            "error": "etcdserver: requested lease not found",
            "message": "etcdserver: requested lease not found",
            "code": 5,
        }
        error = gateway.error_of(answer, "http://e")
        assert error is not None
        self.assertEqual((error.code, error.message), (5, "requested lease not found"))

    def test_stream_error(self) -> None:
        answer = {"error": {"grpc_code": 14, "http_code": 503, "message": "no leader"}}
        error = gateway.error_of(answer, "http://e")
        assert error is not None
        self.assertEqual((error.code, error.message), (14, "no leader"))

    def test_not_an_object(self) -> None:
        self.assertIsInstance(gateway.error_of([1], "http://e"), EtcdError)

    def test_watch_events_tell_puts_from_deletes(self) -> None:
        stream = gateway.MessageStream("http://e", 1 << 20)
        messages = stream.feed(WATCH_STREAM)
        events = [event for m in messages for event in gateway.watch_events(m["result"])]
        self.assertEqual(
            events,
            [
                WatchEvent("put", KeyValue(b"/geerpc/b", b"x", 5, 5, 1, 7)),
                WatchEvent("delete", KeyValue(b"/geerpc/b", mod_revision=6)),
            ],
        )


class MessageStreamTests(SynchronousTestCase):
    def feed_in(self, stream: gateway.MessageStream, cuts: list[int]) -> list[object]:
        messages: list[object] = []
        start = 0
        for cut in [*sorted(cuts), len(WATCH_STREAM)]:
            messages += stream.feed(WATCH_STREAM[start:cut])
            start = cut
        return messages

    @given(st.lists(st.integers(0, len(WATCH_STREAM)), max_size=12))
    def test_any_segmentation_gives_the_same_messages(self, cuts: list[int]) -> None:
        whole = [json.loads(line) for line in WATCH_STREAM.splitlines()]
        stream = gateway.MessageStream("http://e", 1 << 20)
        self.assertEqual(self.feed_in(stream, cuts), whole)
        self.assertEqual(stream.leftover, b"")

    def test_byte_at_a_time(self) -> None:
        stream = gateway.MessageStream("http://e", 1 << 20)
        messages = self.feed_in(stream, list(range(len(WATCH_STREAM))))
        self.assertEqual(len(messages), 3)

    def test_incomplete_message_is_kept(self) -> None:
        stream = gateway.MessageStream("http://e", 1 << 20)
        self.assertEqual(stream.feed(b'{"result":'), [])
        self.assertEqual(stream.leftover, b'{"result":')
        self.assertEqual(stream.feed(b"{}}\n"), [{"result": {}}])

    def test_too_large_message_in_pieces(self) -> None:
        stream = gateway.MessageStream("http://e", 10)
        stream.feed(b'{"a":')
        self.assertRaises(EtcdAnswerTooLarge, stream.feed, b'"0123456789"')

    def test_too_large_complete_message(self) -> None:
        stream = gateway.MessageStream("http://e", 10)
        self.assertRaises(EtcdAnswerTooLarge, stream.feed, b'{"a":"0123456789"}\n')

    def test_garbage_is_an_error(self) -> None:
        stream = gateway.MessageStream("http://e", 100)
        self.assertRaises(EtcdError, stream.feed, b"<html>\n")

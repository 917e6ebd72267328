"""The Option preamble: OptionDecoder, parse_option and Option.to_json (docs/protocol.md 3)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txgeerpc._option import OptionDecoder, parse_option
from txgeerpc._wire import GOB, JSON, MAGIC_NUMBER, Option
from txgeerpc.errors import MessageTooLarge, ProtocolError

from ._helpers import decode_all, vector

GOB_OPTION = (
    b'{"MagicNumber":3927900,"CodecType":"application/gob",'
    b'"ConnectTimeout":10000000000,"HandleTimeout":0}'
)
JSON_OPTION = (
    b'{"MagicNumber":3927900,"CodecType":"application/json",'
    b'"ConnectTimeout":10000000000,"HandleTimeout":0}'
)
GOB_DEFAULT = Option(GOB, 10_000_000_000, 0, MAGIC_NUMBER)


def first_line(name: str) -> bytes:
    data = vector(name)
    return data[: data.index(b"\n") + 1]


class VectorTests(SynchronousTestCase):
    def test_to_json_reproduces_vector_01(self) -> None:
        self.assertEqual(Option().to_json(), first_line("01-gob-tcp.c2s.bin"))
        self.assertEqual(Option().to_json(), GOB_OPTION + b"\n")

    def test_to_json_reproduces_vector_02(self) -> None:
        self.assertEqual(Option(codec_type=JSON).to_json(), first_line("02-json-ext-tcp.c2s.bin"))

    def test_to_json_reproduces_vector_03(self) -> None:
        option = Option(handle_timeout_ns=250_000_000)
        self.assertEqual(option.to_json(), first_line("03-gob-handle-timeout.c2s.bin"))

    def test_decode_vector_01_keeps_gob_stream(self) -> None:
        data = vector("01-gob-tcp.c2s.bin")
        options, rest = decode_all([data])
        self.assertEqual(options, [GOB_DEFAULT])
        self.assertEqual(rest, data[101:])
        self.assertEqual(rest[:2], b"\x37\x7f")  # gob: count 55, type id -64

    def test_decode_vector_01_byte_by_byte(self) -> None:
        data = vector("01-gob-tcp.c2s.bin")
        options, rest = decode_all([data[i : i + 1] for i in range(len(data))])
        self.assertEqual(options, [GOB_DEFAULT])
        self.assertEqual(rest, data[101:])

    def test_decode_vector_02(self) -> None:
        data = vector("02-json-ext-tcp.c2s.bin")
        options, rest = decode_all([data[:102], data[102:169], data[169:]])
        self.assertEqual(options, [Option(JSON, 10_000_000_000, 0, MAGIC_NUMBER)])
        self.assertEqual(rest, data[102:])

    def test_decode_vector_03_handle_timeout(self) -> None:
        data = vector("03-gob-handle-timeout.c2s.bin")
        options, rest = decode_all([data])
        self.assertEqual(options, [Option(GOB, 10_000_000_000, 250_000_000, MAGIC_NUMBER)])
        self.assertEqual(rest, data[len(first_line("03-gob-handle-timeout.c2s.bin")) :])

    def test_decode_vector_05_bad_magic(self) -> None:
        with self.assertRaises(ProtocolError) as caught:
            decode_all([vector("05-bad-magic.c2s.bin")])
        self.assertIn("invalid magic number 0", str(caught.exception))

    def test_decode_vector_15_coalesced_request_is_kept(self) -> None:
        data = vector("15-coalesced-option-classic.c2s.bin")
        options, rest = decode_all([data])
        self.assertEqual(options, [GOB_DEFAULT])
        self.assertEqual(rest, data[101:])
        self.assertEqual(len(rest), 116)

    def test_decode_vector_17_widened_option_without_newline(self) -> None:
        data = vector("17-widened-option-classic.c2s.bin")
        self.assertEqual(data[511:512], b"}")
        options, rest = decode_all([data])
        self.assertEqual(options, [GOB_DEFAULT])
        self.assertEqual(rest, data[512:])

    def test_decode_vector_06_connect_head_is_rejected(self) -> None:
        decoder = OptionDecoder()
        self.assertRaises(ProtocolError, decoder.feed, vector("06-gob-http-connect.c2s.bin"))


class TrailingNewlineTests(SynchronousTestCase):
    def test_single_newline_dropped(self) -> None:
        self.assertEqual(decode_all([GOB_OPTION + b"\ngob"]), ([GOB_DEFAULT], b"gob"))

    def test_crlf_dropped(self) -> None:
        self.assertEqual(decode_all([GOB_OPTION + b"\r\ngob"]), ([GOB_DEFAULT], b"gob"))

    def test_no_newline_keeps_everything(self) -> None:
        self.assertEqual(decode_all([GOB_OPTION + b"\x07gob"]), ([GOB_DEFAULT], b"\x07gob"))

    def test_newline_in_a_later_feed_is_dropped(self) -> None:
        decoder = OptionDecoder()
        option, rest = decoder.feed(GOB_OPTION)
        self.assertEqual((option, rest), (GOB_DEFAULT, b""))
        self.assertFalse(decoder.settled)
        self.assertEqual(decoder.feed(b"\n\x37\x7f"), (None, b"\x37\x7f"))
        self.assertTrue(decoder.settled)
        self.assertEqual(decoder.feed(b"\n\n"), (None, b"\n\n"))

    def test_lone_newline_feed_then_gob(self) -> None:
        decoder = OptionDecoder()
        decoder.feed(GOB_OPTION)
        self.assertEqual(decoder.feed(b"\n"), (None, b""))
        self.assertTrue(decoder.settled)
        self.assertEqual(decoder.feed(b"\n"), (None, b"\n"))

    def test_crlf_split_across_feeds(self) -> None:
        decoder = OptionDecoder()
        self.assertEqual(decoder.feed(GOB_OPTION + b"\r"), (GOB_DEFAULT, b""))
        self.assertFalse(decoder.settled)
        self.assertEqual(decoder.feed(b"\nrest"), (None, b"rest"))
        self.assertTrue(decoder.settled)

    def test_cr_followed_by_other_byte_is_kept(self) -> None:
        decoder = OptionDecoder()
        decoder.feed(GOB_OPTION + b"\r")
        self.assertEqual(decoder.feed(b"\x09x"), (None, b"\r\x09x"))
        self.assertEqual(decode_all([GOB_OPTION + b"\r\r\n"]), ([GOB_DEFAULT], b"\r\r\n"))

    def test_gob_whitespace_bytes_after_newline_are_kept(self) -> None:
        for byte in (b"\x09", b"\x0a", b"\x0d", b"\x20"):
            with self.subTest(byte=byte):
                data = GOB_OPTION + b"\n" + byte + b"\xff\x81"
                self.assertEqual(decode_all([data]), ([GOB_DEFAULT], byte + b"\xff\x81"))
                self.assertEqual(
                    decode_all([GOB_OPTION, b"\n", byte, b"\xff\x81"]),
                    ([GOB_DEFAULT], byte + b"\xff\x81"),
                )

    def test_gob_whitespace_byte_directly_after_object_is_kept(self) -> None:
        for byte in (b"\x09", b"\x0d", b"\x20"):
            with self.subTest(byte=byte):
                expected = ([GOB_DEFAULT], byte + b"\x01")
                self.assertEqual(decode_all([GOB_OPTION + byte + b"\x01"]), expected)
                self.assertEqual(decode_all([GOB_OPTION, byte, b"\x01"]), expected)
                self.assertEqual(decode_all([GOB_OPTION + byte, b"\x01"]), expected)

    def test_lone_cr_is_held_until_the_next_byte(self) -> None:
        decoder = OptionDecoder()
        self.assertEqual(decoder.feed(GOB_OPTION + b"\r"), (GOB_DEFAULT, b""))
        self.assertFalse(decoder.settled)
        self.assertEqual(decoder.feed(b""), (None, b""))
        self.assertEqual(decoder.feed(b"\r"), (None, b"\r\r"))
        self.assertTrue(decoder.settled)

    def test_two_newlines_drop_only_one(self) -> None:
        self.assertEqual(decode_all([GOB_OPTION + b"\n\n"]), ([GOB_DEFAULT], b"\n"))
        self.assertEqual(decode_all([GOB_OPTION + b"\r\n\r\n"]), ([GOB_DEFAULT], b"\r\n"))

    def test_leading_whitespace_accepted(self) -> None:
        self.assertEqual(decode_all([b" \r\n\t", GOB_OPTION + b"\n"]), ([GOB_DEFAULT], b""))
        self.assertEqual(decode_all([b"\n\n" + GOB_OPTION + b"\nx"]), ([GOB_DEFAULT], b"x"))


class EarlyRejectionTests(SynchronousTestCase):
    def test_http_request_rejected_at_once(self) -> None:
        for data in (b"GET / HTTP/1.1\r\n", b"G", b"CONNECT /_geeprc_ HTTP/1.0\n\n"):
            with self.subTest(data=data):
                self.assertRaises(ProtocolError, OptionDecoder().feed, data)

    def test_gob_bytes_rejected_at_once(self) -> None:
        gob = vector("01-gob-tcp.c2s.bin")[101:]
        self.assertRaises(ProtocolError, OptionDecoder().feed, gob[:1])
        self.assertRaises(ProtocolError, OptionDecoder().feed, gob)

    def test_other_json_values_rejected_at_once(self) -> None:
        for data in (b"[", b"3927900", b'"x', b"n", b"\xff"):
            with self.subTest(data=data):
                self.assertRaises(ProtocolError, OptionDecoder().feed, data)

    def test_garbage_after_leading_whitespace_rejected(self) -> None:
        decoder = OptionDecoder()
        self.assertEqual(decoder.feed(b"  \n"), (None, b""))
        self.assertRaises(ProtocolError, decoder.feed, b"GET")

    def test_oversized_option_rejected(self) -> None:
        decoder = OptionDecoder(64)
        decoder.feed(b'{"MagicNumber":3927900,')
        with self.assertRaises(MessageTooLarge):
            for _ in range(10):
                decoder.feed(b'"X":"' + b"y" * 10 + b'",')

    def test_oversized_complete_option_rejected(self) -> None:
        self.assertRaises(MessageTooLarge, OptionDecoder(50).feed, GOB_OPTION + b"\n")

    def test_invalid_json_object_rejected(self) -> None:
        for data in (b'{"MagicNumber":}', b'{"MagicNumber" 3927900}', b"{,}", b'{"a":tru}'):
            with self.subTest(data=data):
                self.assertRaises(ProtocolError, decode_all, [data + b"\n"])


class ParseOptionTests(SynchronousTestCase):
    def test_day1_option_without_durations(self) -> None:
        option = parse_option(b'{"MagicNumber":3927900,"CodecType":"application/gob"}')
        self.assertEqual(option, Option(GOB, 0, 0, MAGIC_NUMBER))

    def test_keys_case_insensitive(self) -> None:
        option = parse_option(
            b'{"magicnumber":3927900,"CODECTYPE":"application/json",'
            b'"connectTimeout":5,"handletimeout":7}'
        )
        self.assertEqual(option, Option(JSON, 5, 7, MAGIC_NUMBER))

    def test_unknown_keys_ignored(self) -> None:
        option = parse_option(
            b'{"Extra":[1,{"a":null}],"MagicNumber":3927900,"CodecType":"application/gob",'
            b'"HandleTimeout":3,"Other":"x"}'
        )
        self.assertEqual(option, Option(GOB, 0, 3, MAGIC_NUMBER))

    def test_null_fields_are_zero(self) -> None:
        option = parse_option(
            b'{"MagicNumber":3927900,"CodecType":null,"ConnectTimeout":null,"HandleTimeout":null}'
        )
        self.assertEqual(option, Option("", 0, 0, MAGIC_NUMBER))

    def test_missing_codec_type_is_empty(self) -> None:
        self.assertEqual(parse_option(b'{"MagicNumber":3927900}').codec_type, "")

    def test_negative_handle_timeout_accepted(self) -> None:
        option = parse_option(b'{"MagicNumber":3927900,"CodecType":"x","HandleTimeout":-1}')
        self.assertEqual(option.handle_timeout_ns, -1)

    def test_int64_extremes_accepted(self) -> None:
        option = parse_option(
            b'{"MagicNumber":3927900,"ConnectTimeout":9223372036854775807,'
            b'"HandleTimeout":-9223372036854775808}'
        )
        self.assertEqual(option.connect_timeout_ns, 2**63 - 1)
        self.assertEqual(option.handle_timeout_ns, -(2**63))

    def test_duration_outside_int64_rejected(self) -> None:
        # Go: json: cannot unmarshal number 9223372036854775808 into ... time.Duration
        for text in (b"9223372036854775808", b"-9223372036854775809", b"1" + b"0" * 30):
            with self.subTest(text=text):
                with self.assertRaises(ProtocolError):
                    parse_option(b'{"MagicNumber":3927900,"HandleTimeout":' + text + b"}")

    def test_wrong_magic_names_it_in_hex(self) -> None:
        with self.assertRaises(ProtocolError) as caught:
            parse_option(b'{"MagicNumber":3927901,"CodecType":"application/gob"}')
        self.assertIn("invalid magic number 3bef5d", str(caught.exception))

    def test_missing_magic_is_zero(self) -> None:
        with self.assertRaises(ProtocolError) as caught:
            parse_option(b'{"CodecType":"application/gob"}')
        self.assertIn("invalid magic number 0", str(caught.exception))

    def test_magic_as_string_rejected(self) -> None:
        self.assertRaises(ProtocolError, parse_option, b'{"MagicNumber":"3927900"}')

    def test_magic_as_float_or_bool_rejected(self) -> None:
        for text in (b"3927900.0", b"3.9279e6", b"true"):
            with self.subTest(text=text):
                self.assertRaises(ProtocolError, parse_option, b'{"MagicNumber":' + text + b"}")

    def test_durations_must_be_integers(self) -> None:
        for key in (b"ConnectTimeout", b"HandleTimeout"):
            for text in (b"1e9", b"1.0", b'"1s"', b"true", b"[1]", b"{}"):
                with self.subTest(key=key, text=text):
                    raw = b'{"MagicNumber":3927900,"%s":%s}' % (key, text)
                    self.assertRaises(ProtocolError, parse_option, raw)

    def test_codec_type_must_be_a_string(self) -> None:
        for text in (b"1", b"true", b'["application/gob"]'):
            with self.subTest(text=text):
                raw = b'{"MagicNumber":3927900,"CodecType":' + text + b"}"
                self.assertRaises(ProtocolError, parse_option, raw)

    def test_non_objects_rejected(self) -> None:
        for raw in (b"[3927900]", b"3927900", b'"x"', b"null", b"true"):
            with self.subTest(raw=raw):
                self.assertRaises(ProtocolError, parse_option, raw)

    def test_non_json_rejected(self) -> None:
        for raw in (b"{", b"", b"\xff\xfe", b"{'MagicNumber':3927900}"):
            with self.subTest(raw=raw):
                self.assertRaises(ProtocolError, parse_option, raw)

    def test_non_json_constants_rejected(self) -> None:
        # NaN / Infinity are not JSON; Go fails with "invalid character 'N' ...".
        for text in (b"NaN", b"Infinity", b"-Infinity"):
            with self.subTest(text=text):
                raw = b'{"MagicNumber":3927900,"CodecType":"application/gob","X":' + text + b"}"
                self.assertRaises(ProtocolError, parse_option, raw)

    def test_deeply_nested_unknown_key_is_a_protocol_error(self) -> None:
        depth = 5000
        raw = b'{"MagicNumber":3927900,"X":' + b"[" * depth + b"]" * depth + b"}"
        self.assertRaises(ProtocolError, parse_option, raw)
        decoder = OptionDecoder(len(raw) + 10)
        self.assertRaises(ProtocolError, decoder.feed, raw + b"\n")


class ToJSONTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        for option in (
            Option(),
            Option(JSON, 0, 0),
            Option("x/y", 1, -1),
            Option(GOB, 2**63 - 1, 250_000_000),
        ):
            with self.subTest(option=option):
                raw = option.to_json()
                self.assertTrue(raw.endswith(b"}\n"))
                self.assertEqual(raw.count(b"\n"), 1)
                self.assertEqual(parse_option(raw[:-1]), option)
                self.assertEqual(decode_all([raw]), ([option], b""))

    def test_to_json_field_order(self) -> None:
        raw = Option("c", 1, 2).to_json()
        self.assertEqual(
            raw, b'{"MagicNumber":3927900,"CodecType":"c","ConnectTimeout":1,"HandleTimeout":2}\n'
        )

    def test_to_json_escapes_like_go_encoder(self) -> None:
        # Go's json.Encoder escapes <, > and & (SetEscapeHTML defaults to true)
        # and writes other non-ASCII text as raw UTF-8.
        raw = Option(codec_type="a<b>&c/é").to_json()
        self.assertIn('"CodecType":"a\\u003cb\\u003e\\u0026c/é"'.encode(), raw)

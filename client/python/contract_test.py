#!/usr/bin/python3
"""The params contract seen from Python, against a live eventbusd ($EVENTBUS_SERVER).

Each case raises to a subscriber this test runs itself and compares the exact bytes it receives:
exact integers in the json forms, Value numbers rounded to doubles (why the json form exists),
unset Values and NaN refused, object key order kept by the json form and sorted by a Struct.
"""

import json
import os
import socket
import threading
import unittest

import grpc
from google.protobuf import struct_pb2

from eventbus_client import EventBus, named_params, raise_request
from eventbus.v1 import eventbus_pb2 as pb

EVENT = "E_CONTRACT_PYTHON"


class ContractTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        server = os.environ.get("EVENTBUS_SERVER")
        if not server:
            raise RuntimeError("EVENTBUS_SERVER (HOST:PORT of a live eventbusd) is not set")
        cls.listener = socket.create_server(("127.0.0.1", 0))
        cls.bus = EventBus(server)
        port = cls.listener.getsockname()[1]
        cls.bus.subscribe(EVENT, "tcp:127.0.0.1:%d" % port, expire_seconds=120)
        cls.conn = None
        cls.buffer = b""

    @classmethod
    def tearDownClass(cls):
        cls.bus.unsubscribe(event=EVENT, socket="tcp:127.0.0.1:%d" % cls.listener.getsockname()[1])
        cls.bus.close()
        if cls.conn:
            cls.conn.close()
        cls.listener.close()

    def received(self, **raise_args):
        """Raises EVENT async and returns the one notification the subscriber gets, as bytes."""
        answer = self.bus.raise_event(EVENT, sync=False, **raise_args)
        # The compact async answer: counted, not listed.
        self.assertEqual(answer.subscribers, 1)
        self.assertEqual(answer.queued, 1)
        self.assertEqual(len(answer.deliveries), 0)
        cls = type(self)
        if cls.conn is None:
            cls.listener.settimeout(10)
            cls.conn, _ = cls.listener.accept()
            cls.conn.settimeout(10)
        # One notification is in flight at a time, so it ends where the bytes first parse as JSON.
        while True:
            try:
                json.loads(cls.buffer)
                message, cls.buffer = cls.buffer, b""
                return message
            except ValueError:
                chunk = cls.conn.recv(65536)
                self.assertTrue(chunk, "the subscriber connection closed")
                cls.buffer += chunk

    def expect_params(self, params_json, **raise_args):
        expected = '{"jsonrpc":"2.0","method":"%s","params":%s}' % (EVENT, params_json)
        self.assertEqual(self.received(**raise_args).decode(), expected)

    def expect_invalid(self, fragment, **raise_args):
        with self.assertRaises(grpc.RpcError) as caught:
            self.bus.raise_event(EVENT, **raise_args)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn(fragment, caught.exception.details())

    def receive_exactly(self, expected):
        """Returns the bytes the subscriber gets until it has len(expected) of them."""
        cls = type(self)
        if cls.conn is None:
            cls.listener.settimeout(10)
            cls.conn, _ = cls.listener.accept()
            cls.conn.settimeout(10)
        while len(cls.buffer) < len(expected):
            chunk = cls.conn.recv(65536)
            self.assertTrue(chunk, "the subscriber connection closed after %r" % cls.buffer)
            cls.buffer += chunk
        message, cls.buffer = cls.buffer, b""
        return message

    def test_raise_stream_answers_each_event_in_order_and_delivers_in_order(self):
        # Three messages; the second's middle event has a bad name. Events are built as
        # raise_event builds them: ints as json text, so 12345678901234567890 stays exact.
        batches = [
            [{"event": EVENT, "params": {"seq": 0, "id": 12345678901234567890}, "sync": False},
             raise_request(EVENT, params={"seq": 1, "obj": {"z": 1, "a": 2}}, sync=False),
             {"event": EVENT, "json_params": "[2, 18446744073709551615]", "sync": False}],
            [{"event": EVENT, "params": {"seq": 3, "s": "café"}, "sync": False},
             {"event": "bad event!", "params": {"seq": -1}, "sync": False},
             {"event": EVENT, "params": {"seq": 4, "n": None, "t": True}, "sync": False}],
            [{"event": EVENT, "params": [("seq", 5), ("f", 1.5)], "sync": False},
             {"event": EVENT, "params": {"seq": 6, "id": -2**63}, "sync": False}],
        ]
        results = list(self.bus.raise_stream(iter(batches), timeout=30))
        self.assertEqual([(r.message, r.index, r.event, r.ok) for r in results], [
            (0, 0, EVENT, True), (0, 1, EVENT, True), (0, 2, EVENT, True),
            (1, 0, EVENT, True), (1, 1, "bad event!", False), (1, 2, EVENT, True),
            (2, 0, EVENT, True), (2, 1, EVENT, True)])
        for r in results:
            if r.ok:
                self.assertEqual(r.code, grpc.StatusCode.OK)
                self.assertEqual((r.response.subscribers, r.response.queued), (1, 1))
        bad = results[4]
        self.assertIsNone(bad.response)
        self.assertEqual(bad.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertTrue(bad.details.startswith("event [1]: "), bad.details)
        self.assertIn("bad event!", bad.details)
        params = ['{"seq":0,"id":12345678901234567890}', '{"seq":1,"obj":{"z":1,"a":2}}',
                  "[2,18446744073709551615]", '{"seq":3,"s":"café"}',
                  '{"seq":4,"n":null,"t":true}', '{"seq":5,"f":1.5}',
                  '{"seq":6,"id":-9223372036854775808}']
        expected = "".join('{"jsonrpc":"2.0","method":"%s","params":%s}' % (EVENT, p)
                           for p in params).encode()
        self.assertEqual(self.receive_exactly(expected), expected)

    def test_raise_stream_error_is_rpc_error_after_the_earlier_answers(self):
        # A message of more than 10000 events ends the stream (INVALID_ARGUMENT); the message
        # before it is answered first, and its event delivered.
        too_many = [pb.RaiseRequest(event=EVENT)] * 10001
        stream = self.bus.raise_stream([[raise_request(EVENT, params={"seq": 7}, sync=False)],
                                        too_many], timeout=30)
        results = []
        with self.assertRaises(grpc.RpcError) as caught:
            for result in stream:
                results.append(result)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("message 2 has more than 10000 events", caught.exception.details())
        self.assertEqual([(r.message, r.index, r.ok) for r in results], [(0, 0, True)])
        expected = ('{"jsonrpc":"2.0","method":"%s","params":{"seq":7}}' % EVENT).encode()
        self.assertEqual(self.receive_exactly(expected), expected)

    def test_raise_stream_to_a_server_gone_is_unavailable(self):
        with socket.create_server(("127.0.0.1", 0)) as gone:
            address = "127.0.0.1:%d" % gone.getsockname()[1]
        with EventBus(address) as bus:
            with self.assertRaises(grpc.RpcError) as caught:
                list(bus.raise_stream([[{"event": EVENT}]], timeout=10))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_raise_stream_cancel_ends_the_iteration_with_cancelled(self):
        release = threading.Event()

        def batches():  # one batch, then waits, as a publisher's queue would
            yield [{"event": EVENT + "_NOBODY"}]
            release.wait(10)

        try:
            with self.bus.raise_stream(batches(), timeout=30) as stream:
                self.assertTrue(next(stream).ok)
                stream.cancel()
                with self.assertRaises(grpc.RpcError) as caught:
                    next(stream)
                self.assertEqual(caught.exception.code(), grpc.StatusCode.CANCELLED)
        finally:
            release.set()  # lets gRPC's thread leave the generator

    def test_raise_stream_bad_batch_is_raised_after_the_events_sent_before_it(self):
        def batches():
            yield [{"event": EVENT, "params": {"seq": 8}, "sync": False}]
            yield [{"event": EVENT, "params": {"x": object()}}]  # TypeError building it

        stream = self.bus.raise_stream(batches(), timeout=30)
        results = []
        with self.assertRaisesRegex(TypeError, "param 'x': cannot send a object"):
            for result in stream:
                results.append(result)
        self.assertEqual([(r.message, r.index, r.ok) for r in results], [(0, 0, True)])
        expected = ('{"jsonrpc":"2.0","method":"%s","params":{"seq":8}}' % EVENT).encode()
        self.assertEqual(self.receive_exactly(expected), expected)

    def test_subscription_pages_hold_each_subscription_once_in_socket_order(self):
        event = EVENT + "_PAGES"
        sockets = ["tcp:127.0.0.1:%d" % port for port in (3, 1, 2)]
        for s in sockets:
            self.bus.subscribe(event, s, expire_seconds=120)
        try:
            pages = list(self.bus.subscription_pages(event, page_size=1))
            self.assertEqual([len(p.subscriptions) for p in pages], [1, 1, 1])
            self.assertTrue(all(p.next_page_token for p in pages[:-1]))
            self.assertEqual(pages[-1].next_page_token, "")
            self.assertEqual([p.subscriptions[0].socket for p in pages], sorted(sockets))
            with self.assertRaises(grpc.RpcError) as caught:
                self.bus.list_subscriptions(event, page_size=-1)
            self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("page_size: -1 is negative", caught.exception.details())
        finally:
            for s in sockets:
                self.bus.unsubscribe(event=event, socket=s)

    def test_python_ints_and_json_text_arrive_exactly(self):
        self.expect_params(
            '{"a":9007199254740993,"b":12345678901234567890,"c":-9223372036854775808,'
            '"d":18446744073709551615,"e":1.50}',
            params=[("a", 2**53 + 1), ("b", 12345678901234567890), ("c", -2**63),
                    ("d", 2**64 - 1), ("e", pb.Param(name="e", json="1.50"))])

    def test_value_numbers_are_doubles_so_big_integers_round(self):
        # Documented: a google.protobuf.Value holds a double, so the client library has already
        # rounded 2^53+1 before the server sees it. Use the json form (above) for such integers.
        big = pb.NamedParams(params=[
            pb.Param(name="n", value=struct_pb2.Value(number_value=2**53 + 1)),
            pb.Param(name="m", value=struct_pb2.Value(number_value=12345678901234567890)),
        ])
        self.expect_params('{"n":9007199254740992,"m":1.2345678901234567e+19}', params=big)

    def test_positional_values_round_and_whole_params_json_is_exact(self):
        self.expect_params("[9007199254740992,3]", positional=[2**53 + 1, 3])
        self.expect_params("[9007199254740993,12345678901234567890]",
                           json_params="[9007199254740993, 12345678901234567890]")

    def test_unset_value_is_invalid_argument_naming_the_param(self):
        unset = pb.NamedParams(params=[pb.Param(name="count", value=struct_pb2.Value())])
        self.expect_invalid('param "count": no value', params=unset)
        self.expect_invalid('param "count": no value',
                            params=pb.NamedParams(params=[pb.Param(name="count")]))

    def test_nan_and_infinity_are_invalid_argument(self):
        self.expect_invalid('param "x": NaN cannot be sent as JSON', params={"x": float("nan")})
        self.expect_invalid('param "y": Infinity cannot be sent as JSON',
                            params={"y": float("inf")})
        with self.assertRaises(ValueError):  # inside a dict the wrapper refuses it itself
            named_params({"z": {"v": float("nan")}})

    def test_json_form_keeps_key_order_and_a_struct_sorts_it(self):
        self.expect_params('{"obj":{"z":1,"a":{"y":2,"b":3}}}',
                           params={"obj": {"z": 1, "a": {"y": 2, "b": 3}}})
        struct = struct_pb2.Value()
        struct.struct_value.update({"z": 1, "a": 2})
        self.expect_params('{"obj":{"a":2,"z":1}}',
                           params=pb.NamedParams(params=[pb.Param(name="obj", value=struct)]))

    def test_strings_booleans_and_null_travel_as_values(self):
        self.expect_params('{"s":"café \\"q\\"","t":true,"f":false,"n":null}',
                           params={"s": 'café "q"', "t": True, "f": False, "n": None})


if __name__ == "__main__":
    unittest.main()

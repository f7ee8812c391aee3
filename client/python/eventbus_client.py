"""A small Python client for EventBus (eventbus.v1.EventBusService over gRPC).

Needs grpcio and protobuf (Debian: python3-grpcio, python3-protobuf) and the stubs protoc makes
from proto/eventbus/v1/eventbus.proto (see client/python/README.md) on the import path.

Params are plain Python values; each goes in the form that carries it exactly:
  int, dict, list      -> Param.json (JSON text: any integer exactly, dict keys in insertion order)
  str, bool, float, None -> Param.value (google.protobuf.Value)
A float NaN or infinity is sent as it is, and the server refuses it (INVALID_ARGUMENT).
"""

import collections
import json

import grpc
from google.protobuf import struct_pb2

from eventbus.v1 import eventbus_pb2 as pb
from eventbus.v1 import eventbus_pb2_grpc as pb_grpc

STATUS_NAMES = {
    number: name[len("DELIVERY_STATUS_") :]
    for name, number in pb.DeliveryStatus.items()
}
STATE_NAMES = {
    number: name[len("CONNECTION_STATE_") :]
    for name, number in pb.ConnectionState.items()
}


def to_param(name, value):
    """Returns an eventbus.v1.Param carrying `value` exactly (see the module comment)."""
    if isinstance(value, pb.Param):
        return value
    if isinstance(value, (dict, list)) or (isinstance(value, int) and not isinstance(value, bool)):
        # allow_nan=False: a NaN inside a dict or list fails here, naming nothing lost.
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return pb.Param(name=name, json=text)
    proto_value = struct_pb2.Value()
    if value is None:
        proto_value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        proto_value.bool_value = value
    elif isinstance(value, float):
        proto_value.number_value = value
    elif isinstance(value, str):
        proto_value.string_value = value
    else:
        raise TypeError("param %r: cannot send a %s" % (name, type(value).__name__))
    return pb.Param(name=name, value=proto_value)


def named_params(params):
    """Returns eventbus.v1.NamedParams from a dict (keys in insertion order) or (name, value) pairs."""
    items = params.items() if isinstance(params, dict) else params
    return pb.NamedParams(params=[to_param(name, value) for name, value in items])


def raise_request(event, params=None, positional=None, json_params=None, sync=None,
                  timeout_ms=None, all_deliveries=False):
    """Returns the RaiseRequest that EventBus.raise_event sends (see there): also one event of a
    RaiseStream batch."""
    request = pb.RaiseRequest(event=event, all_deliveries=all_deliveries)
    if params is not None:
        request.named.CopyFrom(
            params if isinstance(params, pb.NamedParams) else named_params(params))
    if positional is not None:
        request.positional.extend(positional)
    if json_params is not None:
        request.json = json_params
    if sync is not None:
        request.sync = sync
    if timeout_ms is not None:
        request.timeout_ms = timeout_ms
    return request


# The canonical code of a StreamError (google.rpc.Code numbering) as a grpc.StatusCode.
STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


class StreamResult(collections.namedtuple("StreamResult",
                                          "message index event response code details")):
    """What became of one event of a RaiseStream: `message` (which batch, from 0), `index` (its
    place in the batch, from 0), `event` (its name), then either `response` (the RaiseResponse
    Raise would have answered; code is grpc.StatusCode.OK) or, when the event was refused,
    `code` (a grpc.StatusCode, e.g. INVALID_ARGUMENT) and `details` (naming the index and the
    problem: 'event [1]: ...'), response None."""

    __slots__ = ()

    @property
    def ok(self):
        return self.response is not None


class RaiseStream:
    """One RaiseStream call (EventBus.raise_stream): iterate it for one StreamResult per event,
    in the order the events were sent.

    A failure of the call itself (UNAUTHENTICATED, the server gone, the deadline) is raised by the
    iteration as grpc.RpcError, after the results that came before it. An exception raised while
    reading `batches` or building its events (a TypeError for a param, say) half-closes the
    stream instead of losing it on gRPC's thread: the events sent before are answered, then the
    iteration raises it. Abandoning the iteration early may leave the call open: cancel() it
    (also done by close(), or by leaving a `with` block). A `batches` generator that waits (on a
    queue, say) keeps gRPC's thread waiting until it returns, cancelled or not.
    """

    def __init__(self, stub, batches, timeout):
        self._sent = collections.deque()  # (message, events) of each message sent, oldest first
        self._request_error = None
        self._call = stub.RaiseStream(self._requests(iter(batches)), timeout=timeout)
        self._results = self._answers()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._results)

    def _requests(self, batches):
        """Yields RaiseStreamRequests on gRPC's thread, recording each before it is sent."""
        message, end = 0, object()
        while True:
            try:
                batch = next(batches, end)
                if batch is end:
                    return
                events = [e if isinstance(e, pb.RaiseRequest) else raise_request(**e)
                          for e in batch]
            except Exception as e:  # pylint: disable=broad-except
                self._request_error = e
                return
            self._sent.append((message, events))
            message += 1
            yield pb.RaiseStreamRequest(events=events)

    def _answers(self):
        """Yields the StreamResults of each answer in turn, then raises what ended the stream."""
        over = False
        try:
            for response in self._call:
                message, events = self._sent.popleft()
                if len(response.results) != len(events):
                    raise RuntimeError(
                        "raise stream: message %d of %d event(s) got %d result(s)" % (
                            message, len(events), len(response.results)))
                for index, (event, result) in enumerate(zip(events, response.results)):
                    if result.HasField("response"):
                        yield StreamResult(message, index, event.event, result.response,
                                           grpc.StatusCode.OK, "")
                    else:
                        yield StreamResult(message, index, event.event, None,
                                           STATUS_CODES.get(result.error.code,
                                                            grpc.StatusCode.UNKNOWN),
                                           result.error.message)
            over = True
        finally:
            if not over:  # an error, or the iteration closed early
                self._call.cancel()
        if self._request_error is not None:
            raise self._request_error

    def cancel(self):
        """Abandons the call: the iteration raises grpc.RpcError (CANCELLED) if not done."""
        self._call.cancel()

    close = cancel

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cancel()


class EventBus:
    """A connection to one EventBus server. Every call has a deadline (`timeout` seconds).

    Errors are grpc.RpcError, with .code() (e.g. grpc.StatusCode.INVALID_ARGUMENT) and .details().
    """

    def __init__(self, target, timeout=10.0, channel=None):
        self._channel = channel or grpc.insecure_channel(target)
        self._stub = pb_grpc.EventBusServiceStub(self._channel)
        self._timeout = timeout

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def subscribe(self, event, socket, expire_seconds=None, event_param=None):
        """Subscribes `socket`; returns the SubscribeResponse (.subscription, .created)."""
        request = pb.SubscribeRequest(event=event, socket=socket)
        if expire_seconds is not None:
            request.expire_seconds = expire_seconds
        if event_param is not None:
            request.event_param = event_param
        return self._stub.Subscribe(request, timeout=self._timeout)

    def unsubscribe(self, id="", event="", socket=""):
        """Removes by id, or by event and socket; returns how many were removed (0 is fine)."""
        request = pb.UnsubscribeRequest(id=id, event=event, socket=socket)
        return self._stub.Unsubscribe(request, timeout=self._timeout).removed

    def raise_event(self, event, params=None, positional=None, json_params=None, sync=None,
                    timeout_ms=None, all_deliveries=False):
        """Raises `event` with at most one of: params (dict or pairs), positional (a list sent as
        google.protobuf.Value doubles), json_params (JSON text). Returns the RaiseResponse: an
        async one lists only the deliveries that are not QUEUED (see its counts) unless
        all_deliveries."""
        request = raise_request(event, params, positional, json_params, sync, timeout_ms,
                                all_deliveries)
        deadline = self._timeout + (timeout_ms or 0) / 1000.0
        return self._stub.Raise(request, timeout=deadline)

    def raise_stream(self, batches, timeout=None):
        """Raises every event of `batches` over one RaiseStream call; returns a RaiseStream, an
        iterator of one StreamResult per event, in the order sent.

        `batches` is an iterable (a generator too: it is read on gRPC's thread as the server takes
        messages) of batches, each a list of events sent as one message; an event is a
        RaiseRequest (see raise_request) or a dict of raise_event's arguments, e.g.
        {"event": "E", "params": {"id": 12345678901234567890}}. When `batches` is exhausted the
        stream is half-closed, and the iterator ends once every event is answered. `timeout`:
        seconds for the whole stream (None: no deadline)."""
        return RaiseStream(self._stub, batches, timeout)

    def list_subscriptions(self, event="", page_size=0, page_token=""):
        """Returns one page, a ListSubscriptionsResponse (.subscriptions, .stale,
        .next_page_token: empty on the last page). page_size 0: the server's default (1000)."""
        return self._stub.ListSubscriptions(
            pb.ListSubscriptionsRequest(event=event, page_size=page_size, page_token=page_token),
            timeout=self._timeout)

    def subscription_pages(self, event="", page_size=0):
        """Yields every page of ListSubscriptions, one call (and one deadline) per page."""
        token = ""
        while True:
            page = self.list_subscriptions(event, page_size, token)
            yield page
            if not page.next_page_token:
                return
            token = page.next_page_token

    def list_events(self, page_size=0, page_token=""):
        """Returns one page, a ListEventsResponse (.events with .event and .subscribers, .stale,
        .next_page_token)."""
        return self._stub.ListEvents(
            pb.ListEventsRequest(page_size=page_size, page_token=page_token),
            timeout=self._timeout)

    def event_pages(self, page_size=0):
        """Yields every page of ListEvents."""
        token = ""
        while True:
            page = self.list_events(page_size, token)
            yield page
            if not page.next_page_token:
                return
            token = page.next_page_token


def format_delivery(delivery):
    """One line per target: socket, status, latency, then the result or the error."""
    latency_ms = delivery.latency.seconds * 1e3 + delivery.latency.nanos / 1e6
    line = "%s  %s  %.2f ms" % (delivery.socket, STATUS_NAMES[delivery.status], latency_ms)
    if delivery.status == pb.DELIVERY_STATUS_OK and delivery.result:
        line += "  " + delivery.result
    elif delivery.status == pb.DELIVERY_STATUS_RPC_ERROR:
        line += "  error %d %s" % (delivery.error.code, delivery.error.message)
    elif delivery.detail:
        line += "  " + delivery.detail
    return line

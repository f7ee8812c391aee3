"""A small Python client for EventBus (eventbus.v1.EventBusService over gRPC).

Needs grpcio and protobuf (Debian: python3-grpcio, python3-protobuf) and the stubs protoc makes
from proto/eventbus/v1/eventbus.proto (see client/python/README.md) on the import path.

Params are plain Python values; each goes in the form that carries it exactly:
  int, dict, list      -> Param.json (JSON text: any integer exactly, dict keys in insertion order)
  str, bool, float, None -> Param.value (google.protobuf.Value)
A float NaN or infinity is sent as it is, and the server refuses it (INVALID_ARGUMENT).
"""

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
        deadline = self._timeout + (timeout_ms or 0) / 1000.0
        return self._stub.Raise(request, timeout=deadline)

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

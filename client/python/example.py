#!/usr/bin/python3
"""Subscribes a JSON-RPC server, raises an event async and sync, lists, and unsubscribes.

Usage: example.py SERVER SOCKET [EVENT]
  SERVER  the EventBus gRPC address, e.g. 127.0.0.1:50051
  SOCKET  the subscriber, e.g. tcp:127.0.0.1:8080 (a JSON-RPC server that answers requests)
"""

import sys

import grpc

from eventbus_client import EventBus, STATE_NAMES, format_delivery


def main(argv):
    if len(argv) not in (3, 4):
        sys.stderr.write(__doc__)
        return 2
    server, socket = argv[1], argv[2]
    event = argv[3] if len(argv) == 4 else "E_PYTHON"
    # The params of both Raises, in this order on the wire. The int and the dict travel as JSON
    # text, so 12345678901234567890 stays exact and "z" stays before "a"; the bool and strings
    # travel as google.protobuf.Value.
    params = {
        "id": 12345678901234567890,
        "obj": {"z": 1, "a": {"y": [True, None], "b": "x"}},
        "ok": True,
        "name": "café",
        "count": 3,
    }
    try:
        with EventBus(server) as bus:
            reply = bus.subscribe(event, socket, expire_seconds=60)
            sub = reply.subscription
            print("subscribed %s %s %s created=%s" % (sub.id, sub.event, sub.socket,
                                                      str(reply.created).lower()))

            for sync in (False, True):
                # Every delivery, QUEUED ones too, so the async answer shows its one target.
                answer = bus.raise_event(event, params, sync=sync, timeout_ms=5000,
                                         all_deliveries=True)
                print("raise %s: subscribers=%d" % ("sync" if sync else "async",
                                                    answer.subscribers))
                for delivery in answer.deliveries:
                    print("  " + format_delivery(delivery))

            # Page by page (the server answers at most page_size per call; 0: its default).
            subscriptions, stale = [], False
            for page in bus.subscription_pages(event, page_size=100):
                subscriptions.extend(page.subscriptions)
                stale = stale or page.stale
            print("list %s: %d subscription(s)%s" % (event, len(subscriptions),
                                                     " (stale)" if stale else ""))
            for s in subscriptions:
                targets = ", ".join("%s %s delivered=%d failed=%d" % (
                    t.address, STATE_NAMES[t.state], t.delivered, t.failed) for t in s.targets)
                print("  %s  %s  %s  ttl=%ds  [%s]" % (s.id, s.event, s.socket, s.ttl.seconds,
                                                        targets))

            print("unsubscribed removed=%d" % bus.unsubscribe(id=sub.id))
    except grpc.RpcError as e:
        print("example: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""A loopback JSON-RPC 2.0 subscriber for the polyglot and admin tests (Python stdlib only).

EventBus writes one compact JSON object per event with no delimiter, so the peer frames the byte
stream itself (braces outside strings), keeps every message exactly as received, and answers each
request (a message with an "id") with a configured raw `result`. Notifications get no answer.

As a module: JsonRpcPeer(result=...).start(), .port, .wait_for(n), .messages, .stop().
As a program: `jsonrpc_peer.py --port_file F [--result JSON]` listens until killed, writes its port
to F once listening, and prints each message it receives on its own line.
"""

import argparse
import json
import os
import socket
import sys
import threading
import time


def split_messages(buffer):
    """Returns (complete JSON objects as bytes, the unfinished rest) of a byte stream of objects.

    Raises ValueError when a message does not start with '{' (the stream is then unusable).
    """
    messages = []
    start = None
    depth = 0
    in_string = False
    escaped = False
    i = 0
    consumed = 0
    while i < len(buffer):
        byte = buffer[i]
        if start is None:
            if byte in b" \t\r\n":
                consumed = i + 1
            elif byte == ord("{"):
                start, depth = i, 1
            else:
                raise ValueError("peer: expected '{' at stream offset %d, got %r" % (i, bytes([byte])))
        elif in_string:
            if escaped:
                escaped = False
            elif byte == ord("\\"):
                escaped = True
            elif byte == ord('"'):
                in_string = False
        elif byte == ord('"'):
            in_string = True
        elif byte in b"{[":
            depth += 1
        elif byte in b"}]":
            depth -= 1
            if depth == 0:
                messages.append(bytes(buffer[start : i + 1]))
                start = None
                consumed = i + 1
        i += 1
    return messages, bytes(buffer[consumed:])


class JsonRpcPeer:
    """Listens on 127.0.0.1 (a free port), records every message, answers requests.

    `result` is the raw JSON text put in each reply's "result". Thread-safe.
    """

    def __init__(self, result='"ok"', on_message=None):
        self.result = result
        self.on_message = on_message
        self.messages = []
        self.errors = []
        self._cond = threading.Condition()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._stopping = False
        self._conns = []

    @property
    def socket_uri(self):
        return "tcp:127.0.0.1:%d" % self.port

    def start(self):
        threading.Thread(target=self._accept_loop, daemon=True).start()
        return self

    def stop(self):
        self._stopping = True
        for s in [self._listener] + self._conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def wait_for(self, count, timeout=10.0):
        """Returns the first `count` messages, or raises TimeoutError naming what arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        "peer: %d of %d messages after %.0f s: %r (errors: %r)"
                        % (len(self.messages), count, timeout, self.messages, self.errors)
                    )
                self._cond.wait(left)
            return list(self.messages[:count])

    def _accept_loop(self):
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buffer = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            try:
                messages, buffer = split_messages(buffer + chunk)
            except ValueError as e:
                with self._cond:
                    self.errors.append(str(e))
                    self._cond.notify_all()
                conn.close()
                return
            for message in messages:
                with self._cond:
                    self.messages.append(message)
                    self._cond.notify_all()
                if self.on_message:
                    self.on_message(message)
                try:
                    request_id = json.loads(message).get("id")
                except ValueError as e:
                    with self._cond:
                        self.errors.append("peer: not JSON: %r: %s" % (message, e))
                    continue
                if request_id is not None:
                    reply = '{"jsonrpc":"2.0","id":%s,"result":%s}' % (
                        json.dumps(request_id),
                        self.result,
                    )
                    conn.sendall(reply.encode())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port_file", required=True, help="written with the port once listening")
    parser.add_argument("--result", default='"ok"', help="raw JSON result of every reply")
    args = parser.parse_args()

    def show(message):
        sys.stdout.write(message.decode("utf-8", "replace") + "\n")
        sys.stdout.flush()

    peer = JsonRpcPeer(result=args.result, on_message=show).start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % peer.port)
    os.rename(tmp, args.port_file)
    threading.Event().wait()


if __name__ == "__main__":
    main()

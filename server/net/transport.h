// The byte stream under one target connection: plain TCP (net/tcp_transport.h) or TLS over TCP
// (net/tls_transport.h). The Connection (net/connection.h) connects the socket, owns its fd and
// epoll registration, and runs the JSON-RPC session (queue, ids, deadlines, replies) over a
// Transport; the Transport only moves bytes and says which readiness it waits for. The session
// never sees TLS, and tcp: keeps its zero-copy sendmsg of the queued {prefix, body} iovecs.
#ifndef EVENTBUS_SERVER_NET_TRANSPORT_H_
#define EVENTBUS_SERVER_NET_TRANSPORT_H_

#include <sys/uio.h>

#include <cstddef>
#include <string>

namespace eventbus::net {

enum class IoStatus {
  kOk,         // progress: the handshake is done, or *bytes > 0 were read or accepted
  kWantRead,   // blocked: call again once the socket is readable
  kWantWrite,  // blocked: call again once the socket is writable
  kClosed,     // the peer closed the stream (Read, Handshake)
  kError,      // failed; error() says why
};

// One connected, non-blocking socket's byte stream. Owned by its Connection; loop thread only.
// The socket's fd belongs to the Connection and outlives the Transport.
class Transport {
 public:
  virtual ~Transport() = default;

  // Advances the handshake: kOk once it is done (at once for plain TCP); kWantRead/kWantWrite
  // until then; kClosed or kError when it failed, error() saying why (for TLS: the verification
  // error or OpenSSL's reason).
  virtual IoStatus Handshake() = 0;

  // Writes the bytes of `iov` in order. kOk: *written > 0 bytes were taken (sent, or held by the
  // transport until the socket takes them: see HasBufferedOutput). kWantRead/kWantWrite: nothing
  // taken. kError: the stream is broken.
  virtual IoStatus Write(const iovec* iov, int iovcnt, size_t* written) = 0;
  // True while bytes taken by Write() still wait for the socket (TLS records partly sent): keep
  // EPOLLOUT armed and call FlushBuffered() when writable, even with nothing else to write.
  virtual bool HasBufferedOutput() const { return false; }
  // Sends what HasBufferedOutput() holds. kOk when nothing is left.
  virtual IoStatus FlushBuffered() { return IoStatus::kOk; }

  // Reads up to `size` bytes. kOk: *read > 0. Fewer than `size` bytes means the socket had no
  // more, unless HasBufferedInput(). kClosed: orderly end of stream.
  virtual IoStatus Read(char* buf, size_t size, size_t* read) = 0;
  // True when a Read() would return something without the socket becoming readable again (TLS
  // plaintext already decrypted, or an end of stream seen behind the last bytes returned).
  virtual bool HasBufferedInput() const { return false; }

  // Why the last kError (or kClosed handshake) happened, e.g. "Connection reset by peer" or
  // "certificate verify failed: unable to get local issuer certificate".
  const std::string& error() const { return error_; }

 protected:
  std::string error_;
};

}  // namespace eventbus::net

#endif  // EVENTBUS_SERVER_NET_TRANSPORT_H_

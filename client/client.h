// C++ client of eventbus.v1.EventBusService (and of the server's grpc.health.v1 service): one
// channel, a deadline on every call, and gRPC errors returned as absl::Status carrying the
// server's code and message. Used by the `eventbus` CLI, the benchmarks and any C++ program that
// subscribes or raises.
#ifndef EVENTBUS_CLIENT_CLIENT_H_
#define EVENTBUS_CLIENT_CLIENT_H_

#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "eventbus/v1/eventbus.grpc.pb.h"
#include "eventbus/v1/eventbus.pb.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"
#include "grpcpp/support/sync_stream.h"

namespace eventbus::client {

struct ClientOptions {
  // Deadline of every call, from its start.
  absl::Duration deadline = absl::Seconds(10);

  // TLS to the server (README, "API TLS and authentication"). On when `tls` is true or any of
  // the tls_* settings below is given; off (plaintext) by default.
  bool tls = false;
  // PEM CA certificates the server's certificate must chain to; "" = the system's roots.
  std::string tls_ca_file = "";
  // PEM client certificate and its key, for servers that require one (mTLS): both or neither.
  std::string tls_cert_file = "";
  std::string tls_key_file = "";
  // The name the server's certificate is verified against (and sent as SNI) instead of the host
  // of the address: for an address by IP, or through a tunnel.
  std::string tls_server_name = "";
  // Bearer token sent with every call as "authorization: Bearer TOKEN". Only over TLS: gRPC
  // itself refuses to send it on a plaintext channel, and Connect refuses the combination.
  std::string token = "";

  bool UsesTls() const {
    return tls || !tls_ca_file.empty() || !tls_cert_file.empty() || !tls_key_file.empty() ||
           !tls_server_name.empty();
  }
};

// A channel to `address` with the TLS and token settings of `options` (its deadline aside).
// INVALID_ARGUMENT naming the setting and file for an unreadable file, a certificate without
// its key (or the reverse), or a token without TLS.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& address,
                                                           const ClientOptions& options);

// Calls grpc.health.v1.Health/Check for `service` on `channel`, bounded by `deadline`. Returns
// the status the server reports; NOT_FOUND when it has none for `service`, UNAVAILABLE /
// DEADLINE_EXCEEDED from the transport. Client::CheckHealth calls it on the client's channel.
absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> CheckHealth(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
    absl::Duration deadline);

// One RaiseStream call (eventbus.proto): Write sends a message of one or more events, Read
// returns the answers, one per message and in the order they were written. One thread may Write
// (then WritesDone) while another Reads; each method from one thread at a time. The server reads
// a message only once it can take it (README, "RaiseStream"), so Write blocks when the stream is
// ahead of the server: a writer that never lets a reader drain the answers stalls, by design.
class RaiseStream {
 public:
  // Cancels the call if it is still open (Finish was not called).
  ~RaiseStream();
  RaiseStream(const RaiseStream&) = delete;
  RaiseStream& operator=(const RaiseStream&) = delete;

  // Sends one message. False when the stream is broken: Finish then says why.
  bool Write(const eventbus::v1::RaiseStreamRequest& message);
  // Tells the server that no more messages follow; it answers what it has, then ends the call.
  bool WritesDone();
  // The next answer, in order. False when there is none left: Finish then gives the outcome.
  bool Read(eventbus::v1::RaiseStreamResponse* response);
  // Waits for the call's status once every answer has been read (or the call failed): OK, or the
  // server's error (same code and message), or DEADLINE_EXCEEDED / UNAVAILABLE / CANCELLED.
  absl::Status Finish();
  // Abandons the call from any thread: pending Writes and Reads fail, the server drops the
  // stream's sync events still waiting.
  void Cancel();

 private:
  friend class Client;
  RaiseStream() = default;

  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<eventbus::v1::RaiseStreamRequest, eventbus::v1::RaiseStreamResponse>>
      stream_;
  bool finished_ = false;
};

// Thread-safe: calls may be issued from any number of threads at once.
class Client {
 public:
  // Creates a channel to `address` ("host:port", or any gRPC target such as "dns:///host:port").
  // The connection is made lazily by the first call, so an unreachable server shows up there as
  // UNAVAILABLE (a TLS handshake that fails, too). INVALID_ARGUMENT for an empty address, a
  // non-positive deadline, or bad TLS or token settings (see MakeChannel).
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& address,
                                                         ClientOptions options = {});

  // Each returns the server's response, or its error (same code and message), or
  // DEADLINE_EXCEEDED / UNAVAILABLE from the transport.
  absl::StatusOr<eventbus::v1::SubscribeResponse> Subscribe(
      const eventbus::v1::SubscribeRequest& request);
  absl::StatusOr<eventbus::v1::UnsubscribeResponse> Unsubscribe(
      const eventbus::v1::UnsubscribeRequest& request);
  absl::StatusOr<eventbus::v1::RaiseResponse> Raise(const eventbus::v1::RaiseRequest& request);
  absl::StatusOr<eventbus::v1::ListSubscriptionsResponse> ListSubscriptions(
      const eventbus::v1::ListSubscriptionsRequest& request);
  absl::StatusOr<eventbus::v1::ListEventsResponse> ListEvents(
      const eventbus::v1::ListEventsRequest& request = {});

  // Opens a RaiseStream call whose deadline is `deadline` from now (the whole stream's: it ends
  // the call, DEADLINE_EXCEEDED); InfiniteDuration for none. Never fails itself: a server that
  // cannot be reached shows up in the first Write or Read failing, then in Finish.
  std::unique_ptr<RaiseStream> OpenRaiseStream(absl::Duration deadline);

  // Pages through every subscription `request` asks for (its page_token is ignored; its
  // page_size, 0 = the server's default, sizes the pages): calls ListSubscriptions page after page,
  // each call with its own deadline, and hands each answer to `page` as it arrives, so memory
  // holds one page at a time. Stops after the last page, at the first failed call (its error is
  // returned), or at the first non-OK status `page` returns (returned as is).
  absl::Status ListAllSubscriptions(
      const eventbus::v1::ListSubscriptionsRequest& request,
      absl::FunctionRef<absl::Status(const eventbus::v1::ListSubscriptionsResponse&)> page);
  // ListAllSubscriptions for ListEvents.
  absl::Status ListAllEvents(
      const eventbus::v1::ListEventsRequest& request,
      absl::FunctionRef<absl::Status(const eventbus::v1::ListEventsResponse&)> page);

  // Calls grpc.health.v1.Health/Check for `service` ("" = the server as a whole,
  // "eventbus.v1.EventBusService" = ready to serve calls). Returns the status the server reports;
  // NOT_FOUND when it has none for `service`, UNAVAILABLE / DEADLINE_EXCEEDED from the transport.
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> CheckHealth(
      const std::string& service);

  // The generated stub, for advanced use (e.g. many concurrent Raises through stub()->async()).
  // Callers set their own deadlines there.
  eventbus::v1::EventBusService::Stub* stub() { return stub_.get(); }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const ClientOptions& options() const { return options_; }

 private:
  Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<eventbus::v1::EventBusService::Stub> stub_;
  const ClientOptions options_;
};

// Same canonical code, same message.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace eventbus::client

#endif  // EVENTBUS_CLIENT_CLIENT_H_

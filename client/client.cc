#include "client/client.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <future>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace eventbus::client {
namespace {

namespace v1 = ::eventbus::v1;

// Calls `method` on `stub` with a fresh context whose deadline is `deadline` from now.
template <typename Response, typename Request, typename Method>
absl::StatusOr<Response> Call(v1::EventBusService::Stub* stub, Method method,
                              const Request& request, absl::Duration deadline) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  Response response;
  grpc::Status status = (stub->*method)(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

// The contents of `path`, given as `setting`; INVALID_ARGUMENT naming both when unreadable.
absl::StatusOr<std::string> ReadPemFile(absl::string_view setting, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(setting, " \"", path, "\": cannot read: ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (!absl::StrContains(text.str(), "-----BEGIN ")) {
    return absl::InvalidArgumentError(absl::StrCat(setting, " \"", path, "\": not a PEM file"));
  }
  return text.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& address,
                                                           const ClientOptions& options) {
  if (address.empty()) return absl::InvalidArgumentError("connect: empty server address");
  grpc::ChannelArguments args;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (!options.UsesTls()) {
    if (!options.token.empty()) {
      return absl::InvalidArgumentError(
          "connect: a bearer token is sent only over TLS (set tls, or a CA file)");
    }
    credentials = grpc::InsecureChannelCredentials();
  } else {
    if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
      return absl::InvalidArgumentError(
          "connect: a client certificate needs both tls_cert and tls_key");
    }
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca_file.empty()) {
      absl::StatusOr<std::string> ca = ReadPemFile("tls_ca", options.tls_ca_file);
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *std::move(ca);
    }
    if (!options.tls_cert_file.empty()) {
      absl::StatusOr<std::string> cert = ReadPemFile("tls_cert", options.tls_cert_file);
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key = ReadPemFile("tls_key", options.tls_key_file);
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *std::move(cert);
      ssl.pem_private_key = *std::move(key);
    }
    credentials = grpc::SslCredentials(ssl);
    if (!options.token.empty()) {
      // Call credentials: gRPC attaches them to every call and only on a secure channel.
      credentials = grpc::CompositeChannelCredentials(credentials,
                                                      grpc::AccessTokenCredentials(options.token));
    }
    if (!options.tls_server_name.empty()) args.SetSslTargetNameOverride(options.tls_server_name);
  }
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(address, credentials, args);
  if (channel == nullptr) {
    return absl::InvalidArgumentError("connect \"" + address + "\": cannot create a channel");
  }
  return channel;
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  // gRPC and absl share the canonical code numbering.
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

Client::Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : channel_(std::move(channel)),
      stub_(v1::EventBusService::NewStub(channel_)),
      options_(options) {}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& address,
                                                        ClientOptions options) {
  if (address.empty()) return absl::InvalidArgumentError("connect: empty server address");
  if (options.deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("connect: the call deadline must be positive");
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(address, options);
  if (!channel.ok()) return channel.status();
  return std::unique_ptr<Client>(new Client(*std::move(channel), options));
}

absl::StatusOr<v1::SubscribeResponse> Client::Subscribe(const v1::SubscribeRequest& request) {
  return Call<v1::SubscribeResponse>(stub_.get(), &v1::EventBusService::Stub::Subscribe, request,
                                     options_.deadline);
}

absl::StatusOr<v1::UnsubscribeResponse> Client::Unsubscribe(const v1::UnsubscribeRequest& request) {
  return Call<v1::UnsubscribeResponse>(stub_.get(), &v1::EventBusService::Stub::Unsubscribe,
                                       request, options_.deadline);
}

absl::StatusOr<v1::RaiseResponse> Client::Raise(const v1::RaiseRequest& request) {
  return Call<v1::RaiseResponse>(stub_.get(), &v1::EventBusService::Stub::Raise, request,
                                 options_.deadline);
}

absl::StatusOr<v1::ListSubscriptionsResponse> Client::ListSubscriptions(
    const v1::ListSubscriptionsRequest& request) {
  return Call<v1::ListSubscriptionsResponse>(
      stub_.get(), &v1::EventBusService::Stub::ListSubscriptions, request, options_.deadline);
}

absl::StatusOr<v1::ListEventsResponse> Client::ListEvents(const v1::ListEventsRequest& request) {
  return Call<v1::ListEventsResponse>(stub_.get(), &v1::EventBusService::Stub::ListEvents, request,
                                      options_.deadline);
}

std::unique_ptr<RaiseStream> Client::OpenRaiseStream(absl::Duration deadline) {
  std::unique_ptr<RaiseStream> stream(new RaiseStream);
  if (deadline != absl::InfiniteDuration()) {
    stream->context_.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  }
  stream->stream_ = stub_->RaiseStream(&stream->context_);
  return stream;
}

RaiseStream::~RaiseStream() {
  if (!finished_ && stream_ != nullptr) {
    context_.TryCancel();
    (void)stream_->Finish();
  }
}

bool RaiseStream::Write(const v1::RaiseStreamRequest& message) { return stream_->Write(message); }

bool RaiseStream::WritesDone() { return stream_->WritesDone(); }

bool RaiseStream::Read(v1::RaiseStreamResponse* response) { return stream_->Read(response); }

absl::Status RaiseStream::Finish() {
  finished_ = true;
  return FromGrpcStatus(stream_->Finish());
}

void RaiseStream::Cancel() { context_.TryCancel(); }

namespace {

// Calls `list` with `request` and each next_page_token in turn, handing every answer to `page`.
template <typename Request, typename Response, typename List>
absl::Status PageThrough(Request request, List list,
                         absl::FunctionRef<absl::Status(const Response&)> page) {
  request.clear_page_token();
  for (;;) {
    absl::StatusOr<Response> response = list(request);
    if (!response.ok()) return response.status();
    if (absl::Status handled = page(*response); !handled.ok()) return handled;
    if (response->next_page_token().empty()) return absl::OkStatus();
    if (response->next_page_token() == request.page_token()) {
      // The server keeps the order; a token that does not move on would loop for ever.
      return absl::InternalError("list: the server answered the same page token twice");
    }
    request.set_page_token(response->next_page_token());
  }
}

}  // namespace

absl::Status Client::ListAllSubscriptions(
    const v1::ListSubscriptionsRequest& request,
    absl::FunctionRef<absl::Status(const v1::ListSubscriptionsResponse&)> page) {
  return PageThrough<v1::ListSubscriptionsRequest, v1::ListSubscriptionsResponse>(
      request, [this](const v1::ListSubscriptionsRequest& r) { return ListSubscriptions(r); },
      page);
}

absl::Status Client::ListAllEvents(
    const v1::ListEventsRequest& request,
    absl::FunctionRef<absl::Status(const v1::ListEventsResponse&)> page) {
  return PageThrough<v1::ListEventsRequest, v1::ListEventsResponse>(
      request, [this](const v1::ListEventsRequest& r) { return ListEvents(r); }, page);
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> CheckHealth(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
    absl::Duration deadline) {
  using grpc::health::v1::HealthCheckRequest;
  using grpc::health::v1::HealthCheckResponse;
  // Debian's gRPC ships the health messages but no generated stub: a generic stub calls the
  // method by name with the generated messages.
  grpc::TemplatedGenericStub<HealthCheckRequest, HealthCheckResponse> stub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status status) { done.set_value(std::move(status)); });
  // Bounded by the call's deadline.
  grpc::Status status = done.get_future().get();
  if (!status.ok()) return FromGrpcStatus(status);
  return response.status();
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Client::CheckHealth(
    const std::string& service) {
  return client::CheckHealth(channel_, service, options_.deadline);
}

}  // namespace eventbus::client

#include "client/client.h"

#include <future>
#include <utility>

#include "absl/time/clock.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"

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

}  // namespace

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
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  if (channel == nullptr) {
    return absl::InvalidArgumentError("connect \"" + address + "\": cannot create a channel");
  }
  return std::unique_ptr<Client>(new Client(std::move(channel), options));
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

// gtest main for test binaries that use gRPC's client callback API (directly, or through the etcd
// store or the C++ client). gRPC 1.51 serves that API here from one process-global completion
// queue, reference-counted by the channels that used it: when the last such channel is destroyed
// gRPC tears the queue down and joins its threads, and the next channel builds it again. Tests
// create and destroy channels case after case and so run that teardown over and over, which races
// inside gRPC ("ref_counted.h: assertion failed: prior > 0" from grpc_cq_internal_unref on a
// nexting thread, seen here in about 1 run in 5 of etcd_store_test under load). One channel that
// has made a callback call and is never destroyed keeps the queue alive, so the teardown runs once,
// at exit. A long-running eventbusd builds its channels once and does not churn them.
#include <future>
#include <memory>

#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace {

void HoldGrpcCallbackQueue() {
  // Never destroyed: its reference on the callback queue lasts until exit.
  static auto* channel = new std::shared_ptr<grpc::Channel>(
      grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials()));
  grpc::GenericStub stub(*channel);
  grpc::ClientContext context;
  // Fails at once (nothing listens on port 1, and the deadline is now): only the call matters.
  context.set_deadline(std::chrono::system_clock::now());
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1), response;
  std::promise<void> done;
  stub.UnaryCall(&context, "/eventbus.testing.Hold/Hold", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status) { done.set_value(); });
  done.get_future().wait();
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  HoldGrpcCallbackQueue();
  return RUN_ALL_TESTS();
}

#include "server/net/outcome.h"

#include "gtest/gtest.h"
#include "server/net/writer_pool.h"

namespace eventbus::net {
namespace {

TEST(DeliveryCodeNameTest, NamesMatchTheProtoEnum) {
  EXPECT_EQ(DeliveryCodeName(DeliveryCode::kQueued), "QUEUED");
  EXPECT_EQ(DeliveryCodeName(DeliveryCode::kOk), "OK");
  EXPECT_EQ(DeliveryCodeName(DeliveryCode::kRpcError), "RPC_ERROR");
  EXPECT_EQ(DeliveryCodeName(DeliveryCode::kTimeout), "TIMEOUT");
  EXPECT_EQ(DeliveryCodeName(DeliveryCode::kConnectFailed), "CONNECT_FAILED");
  EXPECT_EQ(DeliveryCodeName(DeliveryCode::kResolveFailed), "RESOLVE_FAILED");
  EXPECT_EQ(DeliveryCodeName(DeliveryCode::kConnectionLost), "CONNECTION_LOST");
  EXPECT_EQ(DeliveryCodeName(DeliveryCode::kBadReply), "BAD_REPLY");
  EXPECT_EQ(DeliveryCodeName(DeliveryCode::kQueueFull), "QUEUE_FULL");
  EXPECT_EQ(DeliveryCodeName(DeliveryCode::kDestinationDenied), "DESTINATION_DENIED");
  EXPECT_EQ(DeliveryCodeName(DeliveryCode::kTlsFailed), "TLS_FAILED");
  EXPECT_EQ(DeliveryCodeName(DeliveryCode::kOverloaded), "OVERLOADED");
}

TEST(ConnStateNameTest, NamesEveryState) {
  EXPECT_EQ(ConnStateName(ConnState::kIdle), "IDLE");
  EXPECT_EQ(ConnStateName(ConnState::kResolving), "RESOLVING");
  EXPECT_EQ(ConnStateName(ConnState::kConnecting), "CONNECTING");
  EXPECT_EQ(ConnStateName(ConnState::kConnected), "CONNECTED");
  EXPECT_EQ(ConnStateName(ConnState::kBackoff), "BACKOFF");
}

}  // namespace
}  // namespace eventbus::net

#include <memory>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/store/subscription_store.h"

namespace eventbus::store {
namespace {

TEST(OpenStoreTest, MemoryOpensAnInMemoryStore) {
  auto store = OpenStore("memory", "/nonexistent");
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->kind(), "memory");
  EXPECT_TRUE((*store)->healthy());
}

TEST(OpenStoreTest, RejectsAnUnknownSchemeNamingTheUrl) {
  for (const char* url : {"xyz", "", "Memory", "redis://h:1", "etcd:h:1"}) {
    auto store = OpenStore(url, "/tmp");
    EXPECT_EQ(store.status(), absl::InvalidArgumentError(absl::StrCat(
                                  "store \"", url,
                                  "\": unknown scheme (expected memory, sqlite[:PATH] or "
                                  "etcd://HOST:PORT[,...][/PREFIX])")))
        << url;
  }
}

}  // namespace
}  // namespace eventbus::store

#include "server/store/memory_store.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eventbus::store {
namespace {

using registry::Subscription;
using registry::SubscriptionPtr;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

SubscriptionPtr Sub(std::string id, std::string socket = "tcp:h:1") {
  auto sub = std::make_shared<Subscription>();
  sub->id = std::move(id);
  sub->event = "E";
  sub->socket = std::move(socket);
  return sub;
}

// Records what the store tells its listener.
class RecordingListener : public SubscriptionStore::Listener {
 public:
  void OnReload(std::vector<SubscriptionPtr> all) override { reloads.push_back(std::move(all)); }
  void OnUpsert(SubscriptionPtr) override { ++upserts; }
  void OnRemove(const std::string&) override { ++removes; }
  void OnHealth(bool healthy) override { health.push_back(healthy); }

  std::vector<std::vector<SubscriptionPtr>> reloads;
  int upserts = 0;
  int removes = 0;
  std::vector<bool> health;
};

absl::Status PutSync(MemoryStore& store, SubscriptionPtr sub) {
  absl::Status result = absl::UnknownError("not called");
  store.Put(std::move(sub), [&](absl::Status status) { result = status; });
  return result;
}

absl::Status DeleteSync(MemoryStore& store, SubscriptionPtr sub) {
  absl::Status result = absl::UnknownError("not called");
  store.Delete(std::move(sub), [&](absl::Status status) { result = status; });
  return result;
}

TEST(MemoryStoreTest, StartReloadsTheEmptyContents) {
  MemoryStore store;
  RecordingListener listener;
  ASSERT_TRUE(store.Start(&listener).ok());
  ASSERT_EQ(listener.reloads.size(), 1u);
  EXPECT_THAT(listener.reloads[0], IsEmpty());
  EXPECT_EQ(store.kind(), "memory");
  EXPECT_TRUE(store.healthy());
  store.Stop();
  store.Stop();
}

TEST(MemoryStoreTest, PutReplacesByIdAndDeleteIsIdempotent) {
  MemoryStore store;
  SubscriptionPtr a = Sub("a");
  SubscriptionPtr a2 = Sub("a", "tcp:h:2");
  SubscriptionPtr b = Sub("b");
  EXPECT_TRUE(PutSync(store, a).ok());
  EXPECT_TRUE(PutSync(store, b).ok());
  EXPECT_TRUE(PutSync(store, a2).ok());
  EXPECT_THAT(store.Contents(), ElementsAre(a2, b));
  EXPECT_TRUE(DeleteSync(store, a).ok());
  EXPECT_TRUE(DeleteSync(store, a).ok());
  EXPECT_THAT(store.Contents(), ElementsAre(b));
  EXPECT_EQ(store.size(), 1u);
}

TEST(MemoryStoreTest, StartReloadsWhatWasWrittenBefore) {
  MemoryStore store;
  SubscriptionPtr a = Sub("a");
  ASSERT_TRUE(PutSync(store, a).ok());
  RecordingListener listener;
  ASSERT_TRUE(store.Start(&listener).ok());
  ASSERT_EQ(listener.reloads.size(), 1u);
  EXPECT_THAT(listener.reloads[0], ElementsAre(a));
}

TEST(MemoryStoreTest, UnavailableFailsWritesAndReportsHealth) {
  MemoryStore store;
  RecordingListener listener;
  ASSERT_TRUE(store.Start(&listener).ok());
  ASSERT_TRUE(PutSync(store, Sub("a")).ok());

  store.SetAvailable(false);
  EXPECT_FALSE(store.healthy());
  const absl::Status unavailable = absl::UnavailableError("store memory: unavailable (test)");
  EXPECT_EQ(PutSync(store, Sub("b")), unavailable);
  EXPECT_EQ(DeleteSync(store, Sub("a")), unavailable);
  EXPECT_EQ(store.size(), 1u);

  store.SetAvailable(false);  // no change, no report
  store.SetAvailable(true);
  EXPECT_TRUE(store.healthy());
  EXPECT_THAT(listener.health, ElementsAre(false, true));
  EXPECT_TRUE(DeleteSync(store, Sub("a")).ok());
  EXPECT_EQ(store.size(), 0u);
}

TEST(MemoryStoreTest, NoListenerCallAfterStop) {
  MemoryStore store;
  RecordingListener listener;
  ASSERT_TRUE(store.Start(&listener).ok());
  store.Stop();
  store.SetAvailable(false);
  EXPECT_THAT(listener.health, IsEmpty());
}

}  // namespace
}  // namespace eventbus::store

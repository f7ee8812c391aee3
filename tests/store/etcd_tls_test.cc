// etcd over TLS (SPEC §10): a real etcd serving its clients over TLS with client-certificate
// authentication, certificates made by openssl at test time (TestPki).
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/store/etcd_store.h"
#include "server/store/subscription_store.h"
#include "tests/store/store_test_listener.h"
#include "tests/testing/etcd_harness.h"
#include "tests/testing/test_pki.h"

namespace eventbus::store {
namespace {

using ::eventbus::testing::CertFiles;
using ::eventbus::testing::CertUsage;
using ::eventbus::testing::EtcdHarness;
using ::eventbus::testing::TestPki;
using ::testing::HasSubstr;

constexpr char kPrefix[] = "/eventbus-tls";

class EtcdTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!EtcdHarness::Available()) {
      GTEST_SKIP() << EtcdHarness::kEtcdBinary << " is not installed (package etcd-server)";
    }
    auto pki = TestPki::Create();
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *std::move(pki);
    auto server = pki_->IssueLocalhostServer("etcd");
    ASSERT_TRUE(server.ok()) << server.status();
    auto client = pki_->Issue("eventbus", "eventbus", {}, CertUsage::kClient);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    auto etcd = EtcdHarness::StartTls({pki_->ca_cert_path(), server->cert_path, server->key_path});
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = *std::move(etcd);
  }

  std::string Url() const { return absl::StrCat("etcd://", etcd_->endpoint(), kPrefix); }

  StoreTlsFiles GoodFiles() const {
    return {pki_->ca_cert_path(), client_.cert_path, client_.key_path};
  }

  // Opens and starts a store with `tls`; the store is kept until the test ends.
  absl::Status OpenAndStart(const StoreTlsFiles& tls, RecordingListener* listener) {
    auto store = OpenStore(Url(), "", tls);
    if (!store.ok()) return store.status();
    stores_.push_back(*std::move(store));
    return stores_.back()->Start(listener);
  }

  std::unique_ptr<TestPki> pki_;
  CertFiles client_;
  std::unique_ptr<EtcdHarness> etcd_;
  RecordingListener listener_a_;
  RecordingListener listener_b_;
  std::vector<std::unique_ptr<SubscriptionStore>> stores_;
};

TEST_F(EtcdTlsTest, AStoreWithTheCaAndAClientCertificateWritesReadsAndWatches) {
  ASSERT_TRUE(OpenAndStart(GoodFiles(), &listener_a_).ok());
  ASSERT_TRUE(OpenAndStart(GoodFiles(), &listener_b_).ok());
  auto sub = MakeSubscription("tls1", "E_TLS", "tcp:127.0.0.1:9", absl::Now(),
                              absl::InfiniteFuture(), std::nullopt);
  ASSERT_TRUE(PutAndWait(*stores_[0], sub).ok());
  // The other replica sees it through its watch, over TLS.
  ASSERT_TRUE(listener_b_.WaitFor([](const ListenerState& s) { return s.subs.count("tls1") > 0; },
                                  absl::Seconds(5)));
  // And it is really in etcd (read through the harness's plaintext side door).
  auto stored = etcd_->Get(absl::StrCat(kPrefix, "/subscriptions/tls1"));
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_TRUE(stored->has_value());
  EXPECT_TRUE(stores_[0]->healthy());
}

TEST_F(EtcdTlsTest, EtcdRefusesAStoreWithoutAClientCertificate) {
  absl::Status started = OpenAndStart({pki_->ca_cert_path(), "", ""}, &listener_a_);
  EXPECT_TRUE(absl::IsUnavailable(started)) << started;
}

TEST_F(EtcdTlsTest, AStoreThatDoesNotTrustEtcdsCertificateDoesNotConnect) {
  auto other = TestPki::Create("Other CA");
  ASSERT_TRUE(other.ok()) << other.status();
  absl::Status started =
      OpenAndStart({(*other)->ca_cert_path(), client_.cert_path, client_.key_path}, &listener_a_);
  EXPECT_TRUE(absl::IsUnavailable(started)) << started;
}

TEST_F(EtcdTlsTest, APlaintextStoreCannotTalkToATlsEtcd) {
  absl::Status started = OpenAndStart({}, &listener_a_);
  EXPECT_TRUE(absl::IsUnavailable(started)) << started;
}

TEST_F(EtcdTlsTest, BadTlsSettingsAreRefusedBeforeAnyConnection) {
  auto sqlite = OpenStore("memory", "", GoodFiles());
  EXPECT_TRUE(absl::IsInvalidArgument(sqlite.status()));
  EXPECT_THAT(std::string(sqlite.status().message()), HasSubstr("apply to etcd stores only"));

  auto half = OpenStore(Url(), "", {pki_->ca_cert_path(), client_.cert_path, ""});
  EXPECT_TRUE(absl::IsInvalidArgument(half.status()));
  EXPECT_THAT(std::string(half.status().message()), HasSubstr("needs both"));

  auto missing = OpenStore(Url(), "", {"/nonexistent/ca.pem", "", ""});
  EXPECT_EQ(missing.status().message(),
            "--store_ca \"/nonexistent/ca.pem\": cannot read: No such file or directory");

  auto swapped = OpenStore(Url(), "", {pki_->ca_cert_path(), client_.key_path, client_.cert_path});
  EXPECT_THAT(std::string(swapped.status().message()),
              HasSubstr("--store_cert \"" + client_.key_path + "\": no PEM certificate"));
}

}  // namespace
}  // namespace eventbus::store

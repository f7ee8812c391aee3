// The Authenticator's decisions (role table, token and certificate callers, the two error codes)
// and its reloads (explicit, on a file change, a bad file keeping the previous set). The same
// through a real TLS server is in tests/service/auth_server_test.cc.
#include "server/auth/authenticator.h"

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/auth/method_roles.h"
#include "tests/testing/log_capture.h"
#include "tests/testing/wait.h"

namespace eventbus::auth {
namespace {

using ::eventbus::testing::LogCapture;
using ::eventbus::testing::TempDir;
using ::eventbus::testing::WaitFor;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kService[] = "/eventbus.v1.EventBusService/";

void WriteFile(const std::filesystem::path& path, const std::string& text) {
  // Written aside and renamed, as an operator's tool would: the watcher never reads half a file.
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  std::ofstream(tmp) << text;
  std::filesystem::rename(tmp, path);
}

constexpr char kTokens[] =
    "reader-1 reader token:reader-secret-0123456789\n"
    "pub-1 publisher token:publisher-secret-01234567\n"
    "sub-1 subscriber token:subscriber-secret-0123456\n"
    "admin-1 admin token:admin-secret-0123456789ab\n"
    "sip subscriber cert:sip.example.net\n";

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.path() / "tokens";
    WriteFile(path_, kTokens);
  }

  std::shared_ptr<Authenticator> Make(bool client_certificates = false,
                                      absl::Duration poll = absl::ZeroDuration()) {
    AuthenticatorOptions options;
    options.tokens_file = path_.string();
    options.client_certificates = client_certificates;
    options.poll_interval = poll;
    absl::StatusOr<std::shared_ptr<Authenticator>> auth = Authenticator::Create(options);
    EXPECT_TRUE(auth.ok()) << auth.status();
    return auth.ok() ? *auth : nullptr;
  }

  static Decision WithToken(const Authenticator& auth, const std::string& method,
                            const std::string& token) {
    std::string header = absl::StrCat("Bearer ", token);
    return auth.Authorize(absl::StrCat(kService, method), {header}, {});
  }

  TempDir dir_{"eventbus-auth"};
  std::filesystem::path path_;
};

TEST(MethodRulesTest, EveryMethodHasItsRolesAndHealthAndReflectionAreOpen) {
  EXPECT_EQ(RuleFor("/eventbus.v1.EventBusService/Raise").roles, kPublisher | kAdmin);
  EXPECT_EQ(RuleFor("/eventbus.v1.EventBusService/RaiseStream").roles, kPublisher | kAdmin);
  EXPECT_EQ(RuleFor("/eventbus.v1.EventBusService/Subscribe").roles, kSubscriber | kAdmin);
  EXPECT_EQ(RuleFor("/eventbus.v1.EventBusService/Unsubscribe").roles, kSubscriber | kAdmin);
  EXPECT_EQ(RuleFor("/eventbus.v1.EventBusService/ListSubscriptions").roles,
            kReader | kSubscriber | kAdmin);
  EXPECT_EQ(RuleFor("/eventbus.v1.EventBusService/ListEvents").roles,
            kReader | kSubscriber | kAdmin);
  EXPECT_TRUE(RuleFor("/grpc.health.v1.Health/Check").open);
  EXPECT_TRUE(RuleFor("/grpc.health.v1.Health/Watch").open);
  EXPECT_TRUE(RuleFor("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo").open);
  // Anything not listed needs admin, a new method included.
  EXPECT_FALSE(RuleFor("/eventbus.v1.EventBusService/DropEverything").open);
  EXPECT_EQ(RuleFor("/eventbus.v1.EventBusService/DropEverything").roles, kAdmin);
  EXPECT_FALSE(RuleFor("/grpc.health.v1.HealthX/Check").open);
}

TEST_F(AuthenticatorTest, EachRoleMayCallItsMethodsAndIsDeniedTheOthers) {
  std::shared_ptr<Authenticator> auth = Make();
  ASSERT_NE(auth, nullptr);
  struct Who {
    std::string token;
    std::vector<std::string> allowed;
  };
  const std::vector<std::string> methods = {"Raise", "Subscribe", "Unsubscribe",
                                            "ListSubscriptions", "ListEvents"};
  const std::vector<Who> callers = {
      {"reader-secret-0123456789", {"ListSubscriptions", "ListEvents"}},
      {"publisher-secret-01234567", {"Raise"}},
      {"subscriber-secret-0123456",
       {"Subscribe", "Unsubscribe", "ListSubscriptions", "ListEvents"}},
      {"admin-secret-0123456789ab", methods},
  };
  for (const Who& who : callers) {
    for (const std::string& method : methods) {
      Decision decision = WithToken(*auth, method, who.token);
      bool allowed = std::find(who.allowed.begin(), who.allowed.end(), method) != who.allowed.end();
      ASSERT_TRUE(decision.caller.has_value()) << method;
      if (allowed) {
        EXPECT_TRUE(decision.status.ok()) << method << " " << decision.status;
      } else {
        EXPECT_EQ(decision.status.code(), absl::StatusCode::kPermissionDenied)
            << method << " " << decision.caller->name;
        EXPECT_THAT(decision.status.message(),
                    HasSubstr(absl::StrCat("caller \"", decision.caller->name,
                                           "\" may not call eventbus.v1.EventBusService/", method,
                                           ": it needs ")));
        EXPECT_THAT(decision.status.message(), Not(HasSubstr(who.token)));
      }
    }
  }
  EXPECT_EQ(WithToken(*auth, "Raise", "reader-secret-0123456789").status.message(),
            "caller \"reader-1\" may not call eventbus.v1.EventBusService/Raise: it needs one of "
            "the roles publisher, admin (it has reader)");
  Decision admin = WithToken(*auth, "Subscribe", "admin-secret-0123456789ab");
  EXPECT_EQ(admin.caller->name, "admin-1");
  EXPECT_EQ(admin.caller->roles, kAdmin);
}

TEST_F(AuthenticatorTest, MissingMalformedOrUnknownCredentialsAreUnauthenticated) {
  std::shared_ptr<Authenticator> auth = Make();
  ASSERT_NE(auth, nullptr);
  const std::string raise = absl::StrCat(kService, "Raise");
  Decision none = auth->Authorize(raise, {}, {});
  EXPECT_EQ(none.status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(none.status.message(), HasSubstr("no credentials"));
  Decision unknown = WithToken(*auth, "Raise", "not-a-known-token-000000");
  EXPECT_EQ(unknown.status,
            absl::UnauthenticatedError("eventbus.v1.EventBusService/Raise: unknown bearer token"));
  Decision basic = auth->Authorize(raise, {"Basic YWxpY2U6c2VjcmV0"}, {});
  EXPECT_EQ(basic.status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(basic.status.message(), Not(HasSubstr("YWxp")));
  Decision two = auth->Authorize(
      raise, {"Bearer publisher-secret-01234567", "Bearer admin-secret-0123456789ab"}, {});
  EXPECT_EQ(two.status.code(), absl::StatusCode::kUnauthenticated);
  // The scheme is case-insensitive (RFC 6750).
  EXPECT_TRUE(auth->Authorize(raise, {"bearer publisher-secret-01234567"}, {}).status.ok());
  // A certificate without a cert: line is no credential (and without client certificates on,
  // the transport would never report one).
  Decision cert = auth->Authorize(raise, {}, {"unknown.example.net"});
  EXPECT_EQ(cert.status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(cert.status.message(), HasSubstr("\"unknown.example.net\" has no cert: line"));
}

TEST_F(AuthenticatorTest, HealthAndReflectionNeedNoCredential) {
  std::shared_ptr<Authenticator> auth = Make();
  ASSERT_NE(auth, nullptr);
  for (const char* path : {"/grpc.health.v1.Health/Check",
                           "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"}) {
    Decision decision = auth->Authorize(path, {}, {});
    EXPECT_TRUE(decision.status.ok()) << path;
    EXPECT_FALSE(decision.caller.has_value());
    // Even a wrong token is not held against an open method.
    EXPECT_TRUE(auth->Authorize(path, {"Bearer wrong"}, {}).status.ok());
  }
}

TEST_F(AuthenticatorTest, CertificateIdentityMapsToItsLineAndATokenWins) {
  std::shared_ptr<Authenticator> auth = Make(/*client_certificates=*/true);
  ASSERT_NE(auth, nullptr);
  const std::string subscribe = absl::StrCat(kService, "Subscribe");
  // CN first, then the SANs: any may carry the identity.
  Decision sip = auth->Authorize(subscribe, {}, {"sip-cn", "sip.example.net"});
  ASSERT_TRUE(sip.status.ok()) << sip.status;
  EXPECT_EQ(sip.caller->name, "sip");
  EXPECT_EQ(sip.caller->roles, kSubscriber);
  EXPECT_EQ(auth->Authorize(absl::StrCat(kService, "Raise"), {}, {"sip.example.net"}).status.code(),
            absl::StatusCode::kPermissionDenied);
  // A token sent along decides who the caller is.
  Decision token =
      auth->Authorize(subscribe, {"Bearer reader-secret-0123456789"}, {"sip.example.net"});
  EXPECT_EQ(token.status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(token.caller->name, "reader-1");
}

TEST(AuthenticatorNoTokensTest, WithoutATokensFileEveryVerifiedCertificateIsAnAdmin) {
  AuthenticatorOptions options;
  options.client_certificates = true;
  absl::StatusOr<std::shared_ptr<Authenticator>> auth = Authenticator::Create(options);
  ASSERT_TRUE(auth.ok()) << auth.status();
  Decision decision =
      (*auth)->Authorize("/eventbus.v1.EventBusService/Unsubscribe", {}, {"client-7", "x"});
  ASSERT_TRUE(decision.status.ok()) << decision.status;
  EXPECT_EQ(decision.caller->name, "client-7");
  EXPECT_EQ(decision.caller->roles, kAdmin);
  // No certificate: nothing to authenticate with.
  EXPECT_EQ((*auth)->Authorize("/eventbus.v1.EventBusService/Raise", {}, {}).status.code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Authenticator::Create(AuthenticatorOptions{}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(AuthenticatorTest, ReloadReplacesTheSetAndABadFileKeepsTheOldOne) {
  LogCapture logs;
  std::shared_ptr<Authenticator> auth = Make();
  ASSERT_NE(auth, nullptr);
  WriteFile(path_, "new-1 admin token:new-admin-secret-0000001\n");
  ASSERT_TRUE(auth->Reload("SIGHUP").ok());
  EXPECT_EQ(auth->credential_count(), 1u);
  EXPECT_TRUE(WithToken(*auth, "Raise", "new-admin-secret-0000001").status.ok());
  EXPECT_EQ(WithToken(*auth, "Raise", "admin-secret-0123456789ab").status.code(),
            absl::StatusCode::kUnauthenticated);

  WriteFile(path_, "ok-1 admin token:another-secret-00000001\nbroken line-without-credential\n");
  absl::Status bad = auth->Reload("SIGHUP");
  EXPECT_THAT(bad.message(), HasSubstr(absl::StrCat("\"", path_.string(), "\" line 2: ")));
  // The previous set is still the one in use.
  EXPECT_TRUE(WithToken(*auth, "Raise", "new-admin-secret-0000001").status.ok());
  EXPECT_EQ(WithToken(*auth, "Raise", "another-secret-00000001").status.code(),
            absl::StatusCode::kUnauthenticated);
  std::vector<std::string> errors =
      logs.Matching({"auth credentials not reloaded; keeping the previous ones", "line 2"});
  EXPECT_EQ(errors.size(), 1u);
  for (const std::string& line : logs.lines()) {
    EXPECT_THAT(line, Not(HasSubstr("secret-0000"))) << line;
  }
}

TEST_F(AuthenticatorTest, AChangedFileIsReloadedByTheWatcher) {
  std::shared_ptr<Authenticator> auth = Make(false, absl::Milliseconds(20));
  ASSERT_NE(auth, nullptr);
  const uint64_t first = auth->generation();
  WriteFile(path_, "late-1 publisher token:late-publisher-secret-001\n");
  ASSERT_TRUE(WaitFor(absl::Seconds(10), [&] { return auth->generation() > first; }));
  EXPECT_TRUE(WithToken(*auth, "Raise", "late-publisher-secret-001").status.ok());
  EXPECT_EQ(WithToken(*auth, "Raise", "publisher-secret-01234567").status.code(),
            absl::StatusCode::kUnauthenticated);

  // A bad version is read once and kept out; the good set stays.
  const uint64_t second = auth->generation();
  WriteFile(path_, "late-1 wizard token:late-publisher-secret-002\n");
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(auth->generation(), second);
  EXPECT_TRUE(WithToken(*auth, "Raise", "late-publisher-secret-001").status.ok());
  auth->Stop();
}

}  // namespace
}  // namespace eventbus::auth

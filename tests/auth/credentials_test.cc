// The tokens file: every form of line, every refusal naming file, line and problem without
// echoing a secret, duplicates, and the constant-time lookup's results.
#include "server/auth/credentials.h"

#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/auth/caller.h"

namespace eventbus::auth {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kPath[] = "/etc/eventbus/tokens";

std::string HexSha256(const std::string& text) {
  Sha256Digest digest = Sha256(text);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest.data()), digest.size()));
}

TEST(CredentialSetTest, ParsesTokensHashesCertsCommentsAndBlankLines) {
  const std::string text = absl::StrCat(
      "# EventBus credentials\n"
      "\n"
      "   # indented comment\n"
      "alice admin token:alice-secret-0123456789\n"
      "pub-1 publisher,reader   token:pub-secret-0123456789ab  \n"
      "ci@build reader sha256:",
      HexSha256("ci-token-from-the-vault-01"),
      "\n"
      "opensips subscriber,publisher cert:sip proxy 1.example.net\n");
  absl::StatusOr<CredentialSet> set = CredentialSet::Parse(kPath, text);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->size(), 4u);
  EXPECT_EQ(set->cert_count(), 1u);

  const CredentialSet::Entry* alice = set->FindToken("alice-secret-0123456789");
  ASSERT_NE(alice, nullptr);
  EXPECT_EQ(alice->name, "alice");
  EXPECT_EQ(alice->roles, kAdmin);
  const CredentialSet::Entry* pub = set->FindToken("pub-secret-0123456789ab");
  ASSERT_NE(pub, nullptr);
  EXPECT_EQ(pub->roles, kPublisher | kReader);
  const CredentialSet::Entry* ci = set->FindToken("ci-token-from-the-vault-01");
  ASSERT_NE(ci, nullptr);
  EXPECT_EQ(ci->name, "ci@build");
  EXPECT_EQ(set->FindToken("alice-secret-012345678"), nullptr);
  EXPECT_EQ(set->FindToken(""), nullptr);

  // The identity runs to the end of the line (a CN may have blanks); any of CN and SANs matches.
  const CredentialSet::Entry* sip = set->FindCertificate({"other", "sip proxy 1.example.net", "x"});
  ASSERT_NE(sip, nullptr);
  EXPECT_EQ(sip->name, "opensips");
  EXPECT_EQ(sip->roles, kSubscriber | kPublisher);
  EXPECT_EQ(set->FindCertificate({"sip proxy 1"}), nullptr);
  // A token is not a certificate identity, nor the reverse.
  EXPECT_EQ(set->FindCertificate({"alice-secret-0123456789"}), nullptr);
  EXPECT_EQ(set->FindToken("sip proxy 1.example.net"), nullptr);
}

TEST(CredentialSetTest, KeepsOnlyDigestsOfTokens) {
  absl::StatusOr<CredentialSet> set =
      CredentialSet::Parse(kPath, "alice admin token:alice-secret-0123456789\n");
  ASSERT_TRUE(set.ok());
  const CredentialSet::Entry& entry = set->entries()[0];
  EXPECT_TRUE(entry.is_token);
  EXPECT_EQ(entry.cert_identity, "");
  EXPECT_EQ(entry.token_digest, Sha256("alice-secret-0123456789"));
}

TEST(CredentialSetTest, RefusesBadLinesNamingFileLineAndProblemButNeverTheSecret) {
  const std::string secret = "S3cr3t-T0ken-value-xyz";
  struct Case {
    std::string line;
    std::string problem;
  };
  const std::vector<Case> cases = {
      {"alice admin", "expected NAME ROLE[,ROLE...] token:SECRET | sha256:HEX | cert:IDENTITY"},
      {absl::StrCat("token:", secret), "expected NAME ROLE"},
      {absl::StrCat("alice token:", secret, " admin"), "bad roles field"},
      {absl::StrCat("alice admin,root token:", secret), "unknown role \"root\""},
      {absl::StrCat("alice admin ", secret), "must start with token:, sha256: or cert:"},
      {absl::StrCat("al/ice admin token:", secret), "the name (first field) may only have"},
      {absl::StrCat(std::string(129, 'a'), " admin token:", secret), "name longer than 128"},
      {"alice admin token:short-1", "the token of \"alice\" is shorter than 16 bytes"},
      {absl::StrCat("alice admin token:", secret, " more"),
       "the token of \"alice\" has a blank, control or non-ASCII character"},
      {"alice admin sha256:abcd", "the sha256 of \"alice\" is not 64 hex digits"},
      {"alice admin cert:", "empty cert identity"},
  };
  for (const Case& c : cases) {
    const std::string text =
        absl::StrCat("# header\nbob reader token:bob-secret-0123456789\n", c.line, "\n");
    absl::StatusOr<CredentialSet> set = CredentialSet::Parse(kPath, text);
    ASSERT_FALSE(set.ok()) << c.line;
    EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(set.status().message(),
                HasSubstr(absl::StrCat("auth tokens file \"", kPath, "\" line 3: ")))
        << c.line;
    EXPECT_THAT(set.status().message(), HasSubstr(c.problem)) << c.line;
    EXPECT_THAT(set.status().message(), Not(HasSubstr(secret))) << set.status();
    EXPECT_THAT(set.status().message(), Not(HasSubstr("bob-secret"))) << set.status();
  }
}

TEST(CredentialSetTest, RefusesDuplicateNamesTokensAndIdentities) {
  absl::StatusOr<CredentialSet> names = CredentialSet::Parse(
      kPath, "alice admin token:alice-secret-0123456789\nalice reader cert:alice.example\n");
  EXPECT_THAT(names.status().message(), HasSubstr("line 2: name \"alice\" already used on line 1"));

  absl::StatusOr<CredentialSet> tokens = CredentialSet::Parse(
      kPath, absl::StrCat("alice admin token:same-secret-0123456789\n# x\n",
                          "bob reader sha256:", HexSha256("same-secret-0123456789"), "\n"));
  EXPECT_THAT(tokens.status().message(),
              HasSubstr("line 3: the token of \"bob\" is the same as the one on line 1"));
  EXPECT_THAT(tokens.status().message(), Not(HasSubstr("same-secret")));

  absl::StatusOr<CredentialSet> certs =
      CredentialSet::Parse(kPath, "a admin cert:host.example\nb reader cert:host.example\n");
  EXPECT_THAT(certs.status().message(),
              HasSubstr("line 2: cert identity \"host.example\" already used on line 1"));
}

TEST(CredentialSetTest, LoadNamesAFileThatCannotBeRead) {
  absl::StatusOr<CredentialSet> set = CredentialSet::Load("/nonexistent/eventbus-tokens");
  EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(set.status().message(),
              HasSubstr("auth tokens file \"/nonexistent/eventbus-tokens\": cannot read: No such "
                        "file or directory"));
}

TEST(CredentialSetTest, RoleNamesListsRolesInOrder) {
  EXPECT_EQ(RoleNames(0), "none");
  EXPECT_EQ(RoleNames(kAdmin | kReader), "reader,admin");
  EXPECT_EQ(RoleNames(kAllRoles), "reader,publisher,subscriber,admin");
}

}  // namespace
}  // namespace eventbus::auth

// The API's credentials (SPEC §10): the `--auth_tokens_file` parsed into a CredentialSet, which
// the Authenticator (authenticator.h) matches each call's bearer token or client certificate
// against. Secrets are kept only as SHA-256 digests and compared in constant time.
//
// File format, one credential per line, fields separated by blanks:
//
//   NAME ROLE[,ROLE...] token:SECRET         a bearer token (at least 16 bytes, no blanks)
//   NAME ROLE[,ROLE...] sha256:HEX           the same, given as the SHA-256 of the token (64 hex)
//   NAME ROLE[,ROLE...] cert:IDENTITY        a client certificate whose CN or a SAN is IDENTITY
//
// A line whose first non-blank character is '#' is a comment; blank lines are ignored. NAME is
// 1-128 characters of [A-Za-z0-9._@:-] and names the caller in logs and as a subscription's
// owner; ROLE is reader, publisher, subscriber or admin. Names, tokens and identities are unique.
#ifndef EVENTBUS_SERVER_AUTH_CREDENTIALS_H_
#define EVENTBUS_SERVER_AUTH_CREDENTIALS_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace eventbus::auth {

using Sha256Digest = std::array<uint8_t, 32>;

// SHA-256 of `data` (libcrypto).
Sha256Digest Sha256(absl::string_view data);

// "reader,admin" style list of `roles` (in the order reader, publisher, subscriber, admin);
// "none" for 0.
std::string RoleNames(uint32_t roles);

// An immutable set of credentials. Thread-compatible; shared read-only once built.
class CredentialSet {
 public:
  struct Entry {
    std::string name;
    uint32_t roles = 0;
    // A token's SHA-256 digest (is_token), or a certificate identity.
    bool is_token = false;
    Sha256Digest token_digest{};
    std::string cert_identity;
  };

  // Parses the text of a tokens file; `path` only names it in errors. INVALID_ARGUMENT naming
  // the file, the line number and the problem (never the secret) for the first bad line.
  static absl::StatusOr<CredentialSet> Parse(absl::string_view path, absl::string_view text);
  // Reads and parses `path`. INVALID_ARGUMENT as Parse, or naming the file when it cannot be read.
  static absl::StatusOr<CredentialSet> Load(const std::string& path);

  // The credential whose token is `token`, or nullptr. Compares against every token's digest in
  // constant time (the time depends on the number of tokens, not on their contents).
  const Entry* FindToken(absl::string_view token) const;
  // The credential of the first of `identities` (a certificate's CN and SANs) that has a cert:
  // line, or nullptr.
  const Entry* FindCertificate(const std::vector<std::string>& identities) const;

  size_t size() const { return entries_.size(); }
  size_t cert_count() const { return cert_count_; }
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  std::vector<Entry> entries_;
  size_t cert_count_ = 0;
};

}  // namespace eventbus::auth

#endif  // EVENTBUS_SERVER_AUTH_CREDENTIALS_H_

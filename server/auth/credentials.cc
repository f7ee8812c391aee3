#include "server/auth/credentials.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/auth/caller.h"

namespace eventbus::auth {
namespace {

constexpr size_t kMaxNameBytes = 128;
constexpr size_t kMinTokenBytes = 16;
constexpr size_t kMaxTokenBytes = 4096;

constexpr std::pair<const char*, Role> kRoleNames[] = {
    {"reader", kReader}, {"publisher", kPublisher}, {"subscriber", kSubscriber}, {"admin", kAdmin}};

bool IsNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '@' ||
         c == ':' || c == '-';
}

// A token is sent as "authorization: Bearer TOKEN": printable ASCII without blanks.
bool IsTokenChar(char c) { return c > ' ' && c < 0x7f; }

// Splits off the first blank-separated word of `*rest`.
absl::string_view NextWord(absl::string_view* rest) {
  *rest = absl::StripLeadingAsciiWhitespace(*rest);
  size_t end = 0;
  while (end < rest->size() && !absl::ascii_isspace(static_cast<unsigned char>((*rest)[end]))) {
    ++end;
  }
  absl::string_view word = rest->substr(0, end);
  rest->remove_prefix(end);
  return word;
}

absl::StatusOr<uint32_t> ParseRoles(absl::string_view text) {
  uint32_t roles = 0;
  for (absl::string_view name : absl::StrSplit(text, ',')) {
    uint32_t bit = 0;
    for (const auto& [role_name, role] : kRoleNames) {
      if (name == role_name) bit = role;
    }
    if (bit == 0) {
      // Named only when it looks like a role: a field given in the wrong order may be a secret.
      const bool word = !name.empty() && name.size() <= 32 && absl::c_all_of(name, [](char c) {
        return absl::ascii_islower(static_cast<unsigned char>(c));
      });
      return absl::InvalidArgumentError(
          absl::StrCat(word ? absl::StrCat("unknown role \"", name, "\"") : "bad roles field",
                       " (expected reader, publisher, subscriber or admin, separated by commas)"));
    }
    roles |= bit;
  }
  return roles;
}

}  // namespace

Sha256Digest Sha256(absl::string_view data) {
  Sha256Digest digest;
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest.data());
  return digest;
}

std::string RoleNames(uint32_t roles) {
  std::vector<absl::string_view> names;
  for (const auto& [name, role] : kRoleNames) {
    if ((roles & role) != 0) names.push_back(name);
  }
  return names.empty() ? "none" : absl::StrJoin(names, ",");
}

absl::StatusOr<CredentialSet> CredentialSet::Parse(absl::string_view path, absl::string_view text) {
  CredentialSet set;
  absl::flat_hash_map<std::string, int> names;       // name -> line
  absl::flat_hash_map<std::string, int> digests;     // token digest (raw bytes) -> line
  absl::flat_hash_map<std::string, int> identities;  // cert identity -> line
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    auto bad = [&](absl::string_view problem) {
      return absl::InvalidArgumentError(
          absl::StrCat("auth tokens file \"", path, "\" line ", line_number, ": ", problem));
    };
    absl::string_view rest = absl::StripAsciiWhitespace(line);
    if (rest.empty() || rest[0] == '#') continue;
    Entry entry;
    absl::string_view name = NextWord(&rest);
    absl::string_view roles_text = NextWord(&rest);
    absl::string_view credential = absl::StripAsciiWhitespace(rest);
    if (roles_text.empty() || credential.empty()) {
      return bad("expected NAME ROLE[,ROLE...] token:SECRET | sha256:HEX | cert:IDENTITY");
    }
    if (name.size() > kMaxNameBytes) {
      return bad(absl::StrCat("name longer than ", kMaxNameBytes, " bytes"));
    }
    for (char c : name) {
      if (!IsNameChar(c)) {
        // Not echoed: a field given in the wrong order may be a secret.
        return bad("the name (first field) may only have letters, digits and . _ @ : -");
      }
    }
    entry.name = std::string(name);
    absl::StatusOr<uint32_t> roles = ParseRoles(roles_text);
    if (!roles.ok()) return bad(roles.status().message());
    entry.roles = *roles;

    // Messages about the secret say what is wrong with it, never what it is.
    if (absl::ConsumePrefix(&credential, "token:")) {
      if (credential.size() < kMinTokenBytes) {
        return bad(absl::StrCat("the token of \"", entry.name, "\" is shorter than ",
                                kMinTokenBytes, " bytes"));
      }
      if (credential.size() > kMaxTokenBytes) {
        return bad(absl::StrCat("the token of \"", entry.name, "\" is longer than ", kMaxTokenBytes,
                                " bytes"));
      }
      for (char c : credential) {
        if (!IsTokenChar(c)) {
          return bad(absl::StrCat("the token of \"", entry.name,
                                  "\" has a blank, control or non-ASCII character"));
        }
      }
      entry.is_token = true;
      entry.token_digest = Sha256(credential);
    } else if (absl::ConsumePrefix(&credential, "sha256:")) {
      std::string bytes;
      if (credential.size() != 64 || !absl::c_all_of(credential, [](char c) {
            return absl::ascii_isxdigit(static_cast<unsigned char>(c));
          })) {
        return bad(absl::StrCat("the sha256 of \"", entry.name, "\" is not 64 hex digits"));
      }
      bytes = absl::HexStringToBytes(credential);
      entry.is_token = true;
      std::memcpy(entry.token_digest.data(), bytes.data(), entry.token_digest.size());
    } else if (absl::ConsumePrefix(&credential, "cert:")) {
      if (credential.empty()) return bad(absl::StrCat("empty cert identity for \"", name, "\""));
      entry.cert_identity = std::string(credential);
    } else {
      return bad(absl::StrCat("the credential of \"", entry.name,
                              "\" must start with token:, sha256: or cert:"));
    }

    if (auto [it, added] = names.emplace(entry.name, line_number); !added) {
      return bad(absl::StrCat("name \"", entry.name, "\" already used on line ", it->second));
    }
    if (entry.is_token) {
      std::string key(entry.token_digest.begin(), entry.token_digest.end());
      if (auto [it, added] = digests.emplace(std::move(key), line_number); !added) {
        return bad(absl::StrCat("the token of \"", entry.name, "\" is the same as the one on line ",
                                it->second));
      }
    } else {
      if (auto [it, added] = identities.emplace(entry.cert_identity, line_number); !added) {
        return bad(absl::StrCat("cert identity \"", absl::CEscape(entry.cert_identity),
                                "\" already used on line ", it->second));
      }
      ++set.cert_count_;
    }
    set.entries_.push_back(std::move(entry));
  }
  return set;
}

absl::StatusOr<CredentialSet> CredentialSet::Load(const std::string& path) {
  auto unreadable = [&path](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("auth tokens file \"", path, "\": ", what, ": ", std::strerror(errno)));
  };
  // Read with plain read(2) into one buffer of the file's size, so that no stream buffer or
  // reallocation leaves a copy of the secrets behind; that buffer is wiped after parsing.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return unreadable("cannot read");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    absl::Status status = unreadable("cannot read");
    ::close(fd);
    return status;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat("auth tokens file \"", path, "\": not a regular file"));
  }
  std::string contents(static_cast<size_t>(st.st_size), '\0');
  size_t filled = 0;
  while (filled < contents.size()) {
    ssize_t n = ::read(fd, contents.data() + filled, contents.size() - filled);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status status = unreadable("read error");
      ::close(fd);
      OPENSSL_cleanse(contents.data(), contents.size());
      return status;
    }
    if (n == 0) break;  // shorter than it was a moment ago: parse what is there
    filled += static_cast<size_t>(n);
  }
  ::close(fd);
  absl::StatusOr<CredentialSet> set = Parse(path, absl::string_view(contents.data(), filled));
  OPENSSL_cleanse(contents.data(), contents.size());
  return set;
}

const CredentialSet::Entry* CredentialSet::FindToken(absl::string_view token) const {
  const Sha256Digest digest = Sha256(token);
  const Entry* found = nullptr;
  // Every digest is compared, with CRYPTO_memcmp, so the time does not tell how close a guess was.
  for (const Entry& entry : entries_) {
    if (!entry.is_token) continue;
    const bool same = CRYPTO_memcmp(entry.token_digest.data(), digest.data(), digest.size()) == 0;
    if (same) found = &entry;
  }
  return found;
}

const CredentialSet::Entry* CredentialSet::FindCertificate(
    const std::vector<std::string>& identities) const {
  if (cert_count_ == 0) return nullptr;
  for (const std::string& identity : identities) {
    for (const Entry& entry : entries_) {
      if (!entry.is_token && entry.cert_identity == identity) return &entry;
    }
  }
  return nullptr;
}

}  // namespace eventbus::auth

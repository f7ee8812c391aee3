// Paging of ListSubscriptions and ListEvents (AIP-158): the page_size rules, and the page tokens,
// which carry the key of the last entry a page returned plus the request's filter, serialised and
// base64url-encoded. Opaque to clients, checked when they come back. Pure: no I/O, no proto.
#ifndef EVENTBUS_SERVER_SERVICE_PAGE_TOKEN_H_
#define EVENTBUS_SERVER_SERVICE_PAGE_TOKEN_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/registry/registry.h"

namespace eventbus::service {

// page_size 0 means this many.
inline constexpr int32_t kDefaultPageSize = 1000;
// A larger page_size is served as this many.
inline constexpr int32_t kMaxPageSize = 10000;

// Returns how many entries a page of `page_size` holds: kDefaultPageSize for 0, at most
// kMaxPageSize. INVALID_ARGUMENT for a negative size: `page_size: -1 is negative (0 = the
// default, 1000)`.
absl::StatusOr<size_t> ResolvePageSize(int32_t page_size);

// Which list a token pages.
enum class PageKind : uint8_t {
  kSubscriptions = 1,
  kEvents = 2,
};

struct PageToken {
  PageKind kind = PageKind::kSubscriptions;
  // The request's event filter when the page was served ("" = every event); the next request
  // must ask for the same.
  std::string filter_event;
  // The last entry the page returned (the next page starts after it).
  registry::PageKey last;
};

// Returns the token's text: base64url without padding, a few bytes more than its strings.
std::string EncodePageToken(const PageToken& token);

// Parses a token EncodePageToken made for `kind`. INVALID_ARGUMENT naming page_token when it does
// not parse (not base64url, truncated, damaged, too long, an unknown version) or pages the other
// list: `page_token: not a token this server issued (damaged)`.
absl::StatusOr<PageToken> DecodePageToken(absl::string_view text, PageKind kind);

}  // namespace eventbus::service

#endif  // EVENTBUS_SERVER_SERVICE_PAGE_TOKEN_H_

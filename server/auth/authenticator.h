// Authentication and authorization of API calls (SPEC §10), in one place: a gRPC
// AuthMetadataProcessor installed on the server's TLS credentials. For every call it reads the
// method (":path"), applies the role table (method_roles.h), identifies the caller by bearer
// token (`authorization: Bearer TOKEN`) or verified client certificate, and fails the call
// (UNAUTHENTICATED: no or unknown credential; PERMISSION_DENIED: a role too weak) or lets it
// through. A server interceptor from the same object then records the caller in the call's
// metadata (caller.h), where the service reads it with CallerOf(), and removes the token.
//
// Why two steps: only the processor can fail a call with a status of its choice, but in gRPC
// 1.51 the AuthContext it is given is the connection's, shared by all calls on it, so it cannot
// hold a per-call caller; the interceptor sees each call's own metadata.
//
// The credentials come from the tokens file (credentials.h), reloaded on Reload() (SIGHUP) and
// when the file changes; without a tokens file every verified client certificate is an admin.
#ifndef EVENTBUS_SERVER_AUTH_AUTHENTICATOR_H_
#define EVENTBUS_SERVER_AUTH_AUTHENTICATOR_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "grpcpp/support/server_interceptor.h"
#include "server/auth/caller.h"
#include "server/auth/credentials.h"
#include "server/base/mutex.h"

namespace eventbus::auth {

struct AuthenticatorOptions {
  // The tokens file; "" = none (then client_certificates must be true: every verified
  // certificate is an admin).
  std::string tokens_file;
  // True when the TLS layer requires and verifies client certificates (--tls_client_ca).
  bool client_certificates = false;
  // How often the tokens file is checked for a change (inode, size, mtime, ctime);
  // zero = never (Reload() only).
  absl::Duration poll_interval = absl::Seconds(1);
};

// The outcome of authorizing one call.
struct Decision {
  // OK, UNAUTHENTICATED or PERMISSION_DENIED (with a message for the caller).
  absl::Status status;
  // The caller when known (also for PERMISSION_DENIED); none for an open method without one.
  std::optional<Caller> caller;
};

// Thread-safe. Process() runs on gRPC threads, concurrently with Reload() and the watch thread;
// each call sees one whole credential set, old or new.
class Authenticator final : public grpc::AuthMetadataProcessor,
                            public std::enable_shared_from_this<Authenticator> {
 public:
  // Loads the tokens file (INVALID_ARGUMENT naming the file, line and problem) and starts
  // watching it. INVALID_ARGUMENT also when there is neither a tokens file nor client
  // certificates (nothing to authenticate with).
  static absl::StatusOr<std::shared_ptr<Authenticator>> Create(AuthenticatorOptions options);

  // Stops the watch thread.
  ~Authenticator() override;

  // Decides `path` for a caller presenting `authorization` (the values of that header) and a
  // client certificate with `cert_identities` (its CN and SANs; empty without one). Pure apart
  // from reading the current credential set.
  Decision Authorize(absl::string_view path, const std::vector<absl::string_view>& authorization,
                     const std::vector<std::string>& cert_identities) const;

  // The verified client certificate's identities on `context` (its CN, then its SANs); none
  // without client certificates.
  std::vector<std::string> CertIdentities(const grpc::AuthContext& context) const;

  // The interceptor factory that records each authorized call's caller for CallerOf(); install it
  // first among the server's interceptors. It keeps this Authenticator alive.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
  NewRecordCallerInterceptorFactory() const;

  // Reads the tokens file again: a good file replaces the set for the calls that start after it;
  // a bad one leaves the previous set in place. Either way it is logged (the error names the file
  // and line). Returns the load's status. OK without a tokens file.
  absl::Status Reload(absl::string_view reason = "reload");

  // Stops watching the file (idempotent; the destructor calls it).
  void Stop();

  // True when the TLS layer requires and verifies client certificates.
  bool client_certificates() const { return options_.client_certificates; }
  // How many credentials the current set holds.
  size_t credential_count() const;
  // How many times a new set has been installed (the first load included).
  uint64_t generation() const;

  // grpc::AuthMetadataProcessor. Never blocks (a lookup under a short lock), so it runs inline.
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  // What identifies one version of the file.
  struct FileStamp {
    bool exists = false;
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    int64_t mtime_ns = 0;
    int64_t ctime_ns = 0;
    bool operator==(const FileStamp& other) const;
  };
  static FileStamp StampOf(const std::string& path);

  explicit Authenticator(AuthenticatorOptions options) : options_(std::move(options)) {}
  std::shared_ptr<const CredentialSet> current() const;
  void WatchLoop();

  const AuthenticatorOptions options_;

  mutable eventbus::Mutex mu_;
  std::shared_ptr<const CredentialSet> set_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // The version of the file last read (good or bad), so a bad file is reported once.
  FileStamp last_stamp_ ABSL_GUARDED_BY(mu_);
  // Serializes reloads (SIGHUP and the watch thread), outside mu_ so Process never waits on a read.
  eventbus::Mutex reload_mu_;
  std::thread watcher_;
};

}  // namespace eventbus::auth

#endif  // EVENTBUS_SERVER_AUTH_AUTHENTICATOR_H_

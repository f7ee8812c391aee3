#include "server/auth/authenticator.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/auth/method_roles.h"
#include "server/base/log.h"

namespace eventbus::auth {
namespace {

constexpr char kAuthorizationHeader[] = "authorization";

// Standard AuthContext properties of a TLS peer (grpc/grpc_security_constants.h).
constexpr char kCommonNameProperty[] = "x509_common_name";
constexpr char kSanProperty[] = "x509_subject_alternative_name";

absl::string_view View(const grpc::string_ref& ref) { return {ref.data(), ref.size()}; }

// "/eventbus.v1.EventBusService/Raise" -> "eventbus.v1.EventBusService/Raise", for messages.
absl::string_view MethodName(absl::string_view path) {
  absl::ConsumePrefix(&path, "/");
  return path;
}

std::string NeededRoles(uint32_t roles) {
  std::string names = RoleNames(roles);
  return absl::StrContains(names, ',')
             ? absl::StrCat("one of the roles ", absl::StrJoin(absl::StrSplit(names, ','), ", "))
             : absl::StrCat("the ", names, " role");
}

}  // namespace

bool Authenticator::FileStamp::operator==(const FileStamp& other) const {
  return exists == other.exists && dev == other.dev && ino == other.ino && size == other.size &&
         mtime_ns == other.mtime_ns && ctime_ns == other.ctime_ns;
}

Authenticator::FileStamp Authenticator::StampOf(const std::string& path) {
  FileStamp stamp;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return stamp;
  stamp.exists = true;
  stamp.dev = st.st_dev;
  stamp.ino = st.st_ino;
  stamp.size = st.st_size;
  stamp.mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
  stamp.ctime_ns = int64_t{st.st_ctim.tv_sec} * 1000000000 + st.st_ctim.tv_nsec;
  return stamp;
}

absl::StatusOr<std::shared_ptr<Authenticator>> Authenticator::Create(AuthenticatorOptions options) {
  if (options.tokens_file.empty() && !options.client_certificates) {
    return absl::InvalidArgumentError(
        "authentication needs a tokens file (--auth_tokens_file) or client certificates "
        "(--tls_client_ca)");
  }
  std::shared_ptr<Authenticator> auth(new Authenticator(std::move(options)));
  if (auth->options_.tokens_file.empty()) {
    // Every verified client certificate is an admin (the CA is the authority).
    EB_LOG(kInfo, "auth by client certificate only: every certificate the CA signed is an admin");
    eventbus::MutexLock lock(&auth->mu_);
    auth->set_ = std::make_shared<const CredentialSet>();
    auth->generation_ = 1;
    return auth;
  }
  const std::string& path = auth->options_.tokens_file;
  {
    eventbus::MutexLock reload_lock(&auth->reload_mu_);
    FileStamp stamp = StampOf(path);
    absl::StatusOr<CredentialSet> set = CredentialSet::Load(path);
    if (!set.ok()) return set.status();
    if (set->cert_count() > 0 && !auth->options_.client_certificates) {
      EB_LOG(kWarning, "auth tokens file has cert: lines but client certificates are not requested",
             "file=", base::LogValue(path), " cert_lines=", set->cert_count(),
             " hint=", base::LogValue("set --tls_client_ca"));
    }
    EB_LOG(kInfo, "auth credentials loaded", "file=", base::LogValue(path),
           " credentials=", set->size(), " reason=start");
    eventbus::MutexLock lock(&auth->mu_);
    auth->last_stamp_ = stamp;
    auth->set_ = std::make_shared<const CredentialSet>(*std::move(set));
    auth->generation_ = 1;
  }
  if (auth->options_.poll_interval > absl::ZeroDuration()) {
    // The thread holds a plain pointer: Stop(), called by the destructor at the latest, joins it.
    auth->watcher_ = std::thread([a = auth.get()] { a->WatchLoop(); });
  }
  return auth;
}

Authenticator::~Authenticator() { Stop(); }

void Authenticator::Stop() {
  {
    eventbus::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (watcher_.joinable() && watcher_.get_id() != std::this_thread::get_id()) watcher_.join();
}

std::shared_ptr<const CredentialSet> Authenticator::current() const {
  eventbus::MutexLock lock(&mu_);
  return set_;
}

size_t Authenticator::credential_count() const { return current()->size(); }

uint64_t Authenticator::generation() const {
  eventbus::MutexLock lock(&mu_);
  return generation_;
}

absl::Status Authenticator::Reload(absl::string_view reason) {
  const std::string& path = options_.tokens_file;
  if (path.empty()) return absl::OkStatus();
  eventbus::MutexLock reload_lock(&reload_mu_);
  FileStamp stamp = StampOf(path);
  absl::StatusOr<CredentialSet> set = CredentialSet::Load(path);
  {
    eventbus::MutexLock lock(&mu_);
    last_stamp_ = stamp;
  }
  if (!set.ok()) {
    EB_LOG(kError, "auth credentials not reloaded; keeping the previous ones",
           "file=", base::LogValue(path), " reason=", base::LogValue(reason),
           " error=", base::LogValue(set.status().message()));
    return set.status();
  }
  const size_t count = set->size();
  {
    eventbus::MutexLock lock(&mu_);
    set_ = std::make_shared<const CredentialSet>(*std::move(set));
    ++generation_;
  }
  EB_LOG(kInfo, "auth credentials loaded", "file=", base::LogValue(path), " credentials=", count,
         " reason=", base::LogValue(reason));
  return absl::OkStatus();
}

void Authenticator::WatchLoop() {
  const std::string& path = options_.tokens_file;
  bool reported_missing = false;
  for (;;) {
    FileStamp last;
    {
      eventbus::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(&stopping_, options_.poll_interval)) return;
      last = last_stamp_;
    }
    FileStamp stamp = StampOf(path);
    if (stamp == last) continue;
    if (!stamp.exists) {
      // Being replaced, or removed: keep the set; a file that comes back is read then.
      if (!reported_missing) {
        EB_LOG(kWarning, "auth tokens file is gone; keeping the credentials loaded",
               "file=", base::LogValue(path), " error=", base::LogValue(std::strerror(errno)));
        reported_missing = true;
      }
      continue;
    }
    reported_missing = false;
    (void)Reload("file changed");
  }
}

Decision Authenticator::Authorize(absl::string_view path,
                                  const std::vector<absl::string_view>& authorization,
                                  const std::vector<std::string>& cert_identities) const {
  Decision decision;
  const MethodRule rule = RuleFor(path);
  if (rule.open) return decision;
  std::shared_ptr<const CredentialSet> set = current();
  const absl::string_view method = MethodName(path);
  if (authorization.size() > 1) {
    decision.status =
        absl::UnauthenticatedError(absl::StrCat(method, ": more than one authorization header"));
    return decision;
  }
  if (authorization.size() == 1) {
    absl::string_view value = absl::StripAsciiWhitespace(authorization[0]);
    // RFC 6750: the scheme is case-insensitive. The value itself is never repeated back.
    if (value.size() < 7 || !absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
      decision.status = absl::UnauthenticatedError(
          absl::StrCat(method, ": the authorization header is not \"Bearer TOKEN\""));
      return decision;
    }
    const CredentialSet::Entry* entry =
        set->FindToken(absl::StripLeadingAsciiWhitespace(value.substr(7)));
    if (entry == nullptr) {
      decision.status = absl::UnauthenticatedError(absl::StrCat(method, ": unknown bearer token"));
      return decision;
    }
    decision.caller = Caller{entry->name, entry->roles};
  } else if (!cert_identities.empty()) {
    if (options_.tokens_file.empty()) {
      // No tokens file: the CA that signed the certificate is the authority.
      decision.caller = Caller{cert_identities.front(), kAdmin};
    } else if (const CredentialSet::Entry* entry = set->FindCertificate(cert_identities);
               entry != nullptr) {
      decision.caller = Caller{entry->name, entry->roles};
    } else {
      decision.status = absl::UnauthenticatedError(
          absl::StrCat(method, ": client certificate \"", cert_identities.front(),
                       "\" has no cert: line in the tokens file (and no bearer token was sent)"));
      return decision;
    }
  } else {
    decision.status = absl::UnauthenticatedError(
        absl::StrCat(method, ": no credentials: send \"authorization: Bearer TOKEN\"",
                     options_.client_certificates ? " or a client certificate" : ""));
    return decision;
  }
  if ((decision.caller->roles & rule.roles) == 0) {
    decision.status = absl::PermissionDeniedError(
        absl::StrCat("caller \"", decision.caller->name, "\" may not call ", method, ": it needs ",
                     NeededRoles(rule.roles), " (it has ", RoleNames(decision.caller->roles), ")"));
  }
  return decision;
}

std::vector<std::string> Authenticator::CertIdentities(const grpc::AuthContext& context) const {
  std::vector<std::string> identities;
  if (!options_.client_certificates || !context.IsPeerAuthenticated()) return identities;
  for (const grpc::string_ref& cn : context.FindPropertyValues(kCommonNameProperty)) {
    identities.emplace_back(cn.data(), cn.size());
  }
  for (const grpc::string_ref& san : context.FindPropertyValues(kSanProperty)) {
    identities.emplace_back(san.data(), san.size());
  }
  return identities;
}

grpc::Status Authenticator::Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                                    OutputMetadata* consumed_auth_metadata,
                                    OutputMetadata* /*response_metadata*/) {
  absl::string_view path;
  std::vector<absl::string_view> authorization;
  for (const auto& [key, value] : auth_metadata) {
    if (key == ":path") {
      path = View(value);
    } else if (key == kAuthorizationHeader) {
      authorization.push_back(View(value));
    } else if (key == kCallerNameProperty || key == kCallerRolesProperty) {
      // Only RecordCallerInterceptor sets these; a client's own are dropped here.
      consumed_auth_metadata->insert({std::string(View(key)), std::string(View(value))});
    }
  }
  if (path.empty()) {
    // gRPC passes the request's pseudo-headers along; a call without one cannot be checked.
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "request without a :path");
  }
  Decision decision = Authorize(path, authorization, CertIdentities(*context));
  if (!decision.status.ok()) {
    EB_LOG(kDebug, "call refused", "method=", base::LogValue(MethodName(path)),
           " caller=", base::LogValue(decision.caller ? decision.caller->name : ""),
           " code=", absl::StatusCodeToString(decision.status.code()),
           " error=", base::LogValue(decision.status.message()));
    return grpc::Status(static_cast<grpc::StatusCode>(decision.status.code()),
                        std::string(decision.status.message()));
  }
  // The caller is not recorded here: gRPC 1.51 hands this processor the connection's AuthContext,
  // shared by every call on it (a property added here would pile up and mix callers). The
  // interceptor below records it in the call's own metadata.
  return grpc::Status::OK;
}

namespace {

// Records the caller of each call in its client metadata (caller.h), where CallerOf reads it, and
// removes the authorization header, so no handler, interceptor after it, or log sees the token.
// Runs after the processor has let the call through.
class RecordCallerInterceptor final : public grpc::experimental::Interceptor {
 public:
  RecordCallerInterceptor(grpc::experimental::ServerRpcInfo* info, const Authenticator* auth)
      : info_(info), auth_(auth) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      Record(methods->GetRecvInitialMetadata());
    }
    methods->Proceed();
  }

 private:
  void Record(std::multimap<grpc::string_ref, grpc::string_ref>* metadata) {
    std::vector<std::string> authorization;
    for (auto it = metadata->begin(); it != metadata->end();) {
      if (it->first == kAuthorizationHeader) {
        authorization.emplace_back(it->second.data(), it->second.size());
        it = metadata->erase(it);
      } else if (it->first == kCallerNameProperty || it->first == kCallerRolesProperty) {
        it = metadata->erase(it);  // never the client's (the processor consumed those too)
      } else {
        ++it;
      }
    }
    std::vector<absl::string_view> views(authorization.begin(), authorization.end());
    std::vector<std::string> identities;
    if (auth_->client_certificates()) {
      identities = auth_->CertIdentities(*info_->server_context()->auth_context());
    }
    // The processor's decision again, on the credentials in use now: a reload in between can only
    // leave the caller unrecorded (no name, no roles) or name the credential's new holder.
    Decision decision = auth_->Authorize(info_->method(), views, identities);
    if (!decision.status.ok() || !decision.caller.has_value()) return;
    // The map holds references: the strings live in this interceptor, which lives as the call.
    name_ = decision.caller->name;
    roles_ = absl::StrCat(decision.caller->roles);
    metadata->emplace(kCallerNameProperty, name_);
    metadata->emplace(kCallerRolesProperty, roles_);
  }

  grpc::experimental::ServerRpcInfo* const info_;
  const Authenticator* const auth_;
  std::string name_;
  std::string roles_;
};

class RecordCallerFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RecordCallerFactory(std::shared_ptr<const Authenticator> auth)
      : auth_(std::move(auth)) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RecordCallerInterceptor(info, auth_.get());
  }

 private:
  std::shared_ptr<const Authenticator> auth_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
Authenticator::NewRecordCallerInterceptorFactory() const {
  return std::make_unique<RecordCallerFactory>(shared_from_this());
}

}  // namespace eventbus::auth

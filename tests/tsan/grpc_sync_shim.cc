// Happens-before edges for ThreadSanitizer across Debian's uninstrumented gRPC and abseil.
//
// Debian builds libgrpc, libgrpc++ and libabsl without -fsanitize=thread: the synchronisation
// inside them (absl::Mutex on futexes, lock-free queues on gpr_atm) is invisible to TSan, so the
// hand-off from the thread that starts a call to the thread that runs its callback is missing,
// and gRPC's inline header code (CallOpSet, CallbackWithSuccessTag) and our reactors look racy.
// This library, linked first into every executable of a TSan build (root CMakeLists.txt),
// interposes the few exported entry points where those hand-offs happen and tells TSan about
// them with __tsan_release/__tsan_acquire; it then forwards to the real function (RTLD_NEXT):
//   - absl::Mutex Lock/TryLock/ReaderLock (acquire) and Unlock/ReaderUnlock (release), and
//     absl::CondVar waits (release, then acquire), as called by libgpr/libgrpc/libgrpc++;
//   - grpc_call_start_batch and grpc_server_request_(registered_)call release on the tag; the
//     tag's completion acquires it:
//     grpc_completion_queue_next/pluck return it, or, for the callback API, its functor is
//     routed through a trampoline that acquires before running the original functor_run;
//   - absl::Status's shared rep: each dropped reference releases, the deleting one acquires;
//   - a server reactor's OnDone acquires its call's reference count (ScheduleOnDone);
//   - grpc_core::Executor::Run (libgrpc++ schedules reactors' OnDone with it) releases on the
//     closure, which is routed through a trampoline that acquires before running it.
// Only edges are added; no access is ignored and nothing of EventBus is suppressed. Every edge
// is one that gRPC really establishes (a batch's completion runs after it was started; a closure
// runs after it was scheduled; a mutex is released before the next holder acquires it).
// Outside a TSan process the __tsan_* hooks are absent (weak) and the wrappers only forward.
// Thread contract: all wrappers are thread-safe; the functor table is guarded by a std::mutex.
#include <dlfcn.h>
#include <grpc/grpc.h>
#include <link.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

extern "C" void __tsan_acquire(void* addr) __attribute__((weak));
extern "C" void __tsan_release(void* addr) __attribute__((weak));

namespace {

template <typename F>
F Next(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

void Acquire(void* p) {
  if (__tsan_acquire != nullptr) __tsan_acquire(p);
}

void Release(void* p) {
  if (__tsan_release != nullptr) __tsan_release(p);
}

// absl::Duration and absl::Time (trivially copyable, passed by value in two registers).
struct Duration {
  int64_t hi;
  uint32_t lo;
};

using FunctorRun = void (*)(grpc_completion_queue_functor*, int);

std::mutex functor_mu;
// Original functor_run of each callback tag routed through FunctorTrampoline.
auto* const functor_runs = new std::unordered_map<void*, FunctorRun>;
// Executable segments of the loaded objects: a callback tag (grpc_completion_queue_functor)
// starts with a function pointer, a completion-queue tag (grpc::internal::CompletionQueueTag)
// with a vtable pointer, which points to data.
std::vector<std::pair<uintptr_t, uintptr_t>>* code_ranges = nullptr;

int AddCodeRanges(dl_phdr_info* info, size_t /*size*/, void* out) {
  auto* ranges = static_cast<std::vector<std::pair<uintptr_t, uintptr_t>>*>(out);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD && (ph.p_flags & PF_X) != 0) {
      ranges->emplace_back(info->dlpi_addr + ph.p_vaddr, info->dlpi_addr + ph.p_vaddr + ph.p_memsz);
    }
  }
  return 0;
}

// Requires functor_mu.
bool IsCode(uintptr_t p) {
  if (code_ranges == nullptr) {
    code_ranges = new std::vector<std::pair<uintptr_t, uintptr_t>>;
    dl_iterate_phdr(AddCodeRanges, code_ranges);
  }
  for (const auto& [begin, end] : *code_ranges) {
    if (p >= begin && p < end) return true;
  }
  return false;
}

void FunctorTrampoline(grpc_completion_queue_functor* functor, int ok) {
  Acquire(functor);
  FunctorRun run;
  {
    std::lock_guard<std::mutex> lock(functor_mu);
    run = (*functor_runs)[functor];
  }
  run(functor, ok);
}

// The head of grpc_closure (src/core/lib/iomgr/closure.h, gRPC 1.51): next, cb, cb_arg. The
// callback's second argument (grpc_error_handle, an absl::Status passed by reference in the ABI)
// is forwarded untouched.
struct ClosureHead {
  void* next;
  void (*cb)(void*, void*);
  void* cb_arg;
};

struct ScheduledClosure {
  ClosureHead* closure;
  void (*cb)(void*, void*);
  void* cb_arg;
};

void ClosureTrampoline(void* arg, void* error) {
  auto* scheduled = static_cast<ScheduledClosure*>(arg);
  Acquire(scheduled);
  ClosureHead* closure = scheduled->closure;
  auto* cb = scheduled->cb;
  void* cb_arg = scheduled->cb_arg;
  closure->cb = cb;
  closure->cb_arg = cb_arg;
  delete scheduled;
  cb(cb_arg, error);
}

// Called where a tag is handed to gRPC core: a callback tag's functor is routed through
// FunctorTrampoline, which acquires what this releases when gRPC runs it.
void ReleaseOnTag(void* tag) {
  if (tag == nullptr) return;
  auto* functor = static_cast<grpc_completion_queue_functor*>(tag);
  const uintptr_t first = *static_cast<uintptr_t*>(tag);
  if (first != reinterpret_cast<uintptr_t>(&FunctorTrampoline)) {
    std::lock_guard<std::mutex> lock(functor_mu);
    if (IsCode(first)) {
      (*functor_runs)[functor] = functor->functor_run;
      functor->functor_run = &FunctorTrampoline;
    }
  }
  Release(tag);
}

}  // namespace

extern "C" {

// absl::Mutex / absl::CondVar (abseil 20220623, Debian's inline namespace debian3).
void _ZN4absl7debian35Mutex4LockEv(void* mu) {
  static auto real = Next<void (*)(void*)>("_ZN4absl7debian35Mutex4LockEv");
  real(mu);
  Acquire(mu);
}

void _ZN4absl7debian35Mutex10ReaderLockEv(void* mu) {
  static auto real = Next<void (*)(void*)>("_ZN4absl7debian35Mutex10ReaderLockEv");
  real(mu);
  Acquire(mu);
}

bool _ZN4absl7debian35Mutex7TryLockEv(void* mu) {
  static auto real = Next<bool (*)(void*)>("_ZN4absl7debian35Mutex7TryLockEv");
  const bool locked = real(mu);
  if (locked) Acquire(mu);
  return locked;
}

void _ZN4absl7debian35Mutex6UnlockEv(void* mu) {
  static auto real = Next<void (*)(void*)>("_ZN4absl7debian35Mutex6UnlockEv");
  Release(mu);
  real(mu);
}

void _ZN4absl7debian35Mutex12ReaderUnlockEv(void* mu) {
  static auto real = Next<void (*)(void*)>("_ZN4absl7debian35Mutex12ReaderUnlockEv");
  Release(mu);
  real(mu);
}

void _ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(void* cv, void* mu) {
  static auto real = Next<void (*)(void*, void*)>("_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  Release(mu);
  real(cv, mu);
  Acquire(mu);
}

bool _ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE(void* cv, void* mu,
                                                                       Duration deadline) {
  static auto real = Next<bool (*)(void*, void*, Duration)>(
      "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  Release(mu);
  const bool timed_out = real(cv, mu, deadline);
  Acquire(mu);
  return timed_out;
}

bool _ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE(void* cv, void* mu,
                                                                          Duration timeout) {
  static auto real = Next<bool (*)(void*, void*, Duration)>(
      "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  Release(mu);
  const bool timed_out = real(cv, mu, timeout);
  Acquire(mu);
  return timed_out;
}

grpc_call_error grpc_call_start_batch(grpc_call* call, const grpc_op* ops, size_t nops, void* tag,
                                      void* reserved) {
  static auto real = Next<grpc_call_error (*)(grpc_call*, const grpc_op*, size_t, void*, void*)>(
      "grpc_call_start_batch");
  ReleaseOnTag(tag);
  return real(call, ops, nops, tag, reserved);
}

// A server's request for its next incoming call: the tag completes on a gRPC thread when a call
// is matched, and that thread then runs the method's handler, which was registered (and the
// server built) before this request was made.
grpc_call_error grpc_server_request_call(grpc_server* server, grpc_call** call,
                                         grpc_call_details* details,
                                         grpc_metadata_array* request_metadata,
                                         grpc_completion_queue* cq_bound_to_call,
                                         grpc_completion_queue* cq_for_notification, void* tag) {
  static auto real =
      Next<grpc_call_error (*)(grpc_server*, grpc_call**, grpc_call_details*, grpc_metadata_array*,
                               grpc_completion_queue*, grpc_completion_queue*, void*)>(
          "grpc_server_request_call");
  ReleaseOnTag(tag);
  return real(server, call, details, request_metadata, cq_bound_to_call, cq_for_notification, tag);
}

grpc_call_error grpc_server_request_registered_call(grpc_server* server, void* registered_method,
                                                    grpc_call** call, gpr_timespec* deadline,
                                                    grpc_metadata_array* request_metadata,
                                                    grpc_byte_buffer** optional_payload,
                                                    grpc_completion_queue* cq_bound_to_call,
                                                    grpc_completion_queue* cq_for_notification,
                                                    void* tag) {
  static auto real = Next<grpc_call_error (*)(
      grpc_server*, void*, grpc_call**, gpr_timespec*, grpc_metadata_array*, grpc_byte_buffer**,
      grpc_completion_queue*, grpc_completion_queue*, void*)>(
      "grpc_server_request_registered_call");
  ReleaseOnTag(tag);
  return real(server, registered_method, call, deadline, request_metadata, optional_payload,
              cq_bound_to_call, cq_for_notification, tag);
}

grpc_event grpc_completion_queue_next(grpc_completion_queue* cq, gpr_timespec deadline,
                                      void* reserved) {
  static auto real = Next<grpc_event (*)(grpc_completion_queue*, gpr_timespec, void*)>(
      "grpc_completion_queue_next");
  grpc_event event = real(cq, deadline, reserved);
  if (event.type == GRPC_OP_COMPLETE && event.tag != nullptr) Acquire(event.tag);
  return event;
}

grpc_event grpc_completion_queue_pluck(grpc_completion_queue* cq, void* tag, gpr_timespec deadline,
                                       void* reserved) {
  static auto real = Next<grpc_event (*)(grpc_completion_queue*, void*, gpr_timespec, void*)>(
      "grpc_completion_queue_pluck");
  grpc_event event = real(cq, tag, deadline, reserved);
  if (event.type == GRPC_OP_COMPLETE && event.tag != nullptr) Acquire(event.tag);
  return event;
}

// absl::Status::UnrefNonInlined(uintptr_t): the inline Status copy/destructor code calls it; the
// last reference deletes the StatusRep, whose first member is the std::atomic<int32_t> count.
// Every release of a reference releases on the rep and the deleting one acquires it, so the
// delete is ordered after the other holders' reads (the decrement itself is inside libabsl).
void _ZN4absl7debian36Status15UnrefNonInlinedEm(uintptr_t rep) {
  static auto real = Next<void (*)(uintptr_t)>("_ZN4absl7debian36Status15UnrefNonInlinedEm");
  auto* count = reinterpret_cast<std::atomic<int32_t>*>(rep - 1);
  Release(count);
  if (count->fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  // This was the last reference: nobody else can see the rep, so hand it back to abseil with
  // the count it deletes at.
  count->store(1, std::memory_order_relaxed);
  Acquire(count);
  real(rep);
}

// grpc::internal::ServerCallbackCall::ScheduleOnDone(bool): called by whichever reference of a
// server reactor's call drops last. The reactions' MaybeDone (header code, instrumented) release
// on callbacks_outstanding_, but the call's own references are dropped inside libgrpc++
// (uninstrumented), so when libgrpc++ drops the last one nothing acquires them: acquire here on
// the counter (grpc 1.51 layout: vptr, on_cancel_conditions_remaining_, callbacks_outstanding_).
void _ZN4grpc8internal18ServerCallbackCall14ScheduleOnDoneEb(char* call, bool inline_ondone) {
  static auto real =
      Next<void (*)(char*, bool)>("_ZN4grpc8internal18ServerCallbackCall14ScheduleOnDoneEb");
  Acquire(call + sizeof(void*) + sizeof(std::atomic_int));
  real(call, inline_ondone);
}

// grpc_core::Executor::Run(grpc_closure*, grpc_error_handle, ExecutorType, ExecutorJobType).
void _ZN9grpc_core8Executor3RunEP12grpc_closureN4absl7debian36StatusENS_12ExecutorTypeENS_15ExecutorJobTypeE(
    void* closure, void* error, int type, int job_type) {
  static auto real = Next<void (*)(void*, void*, int, int)>(
      "_ZN9grpc_core8Executor3RunEP12grpc_closureN4absl7debian36StatusENS_"
      "12ExecutorTypeENS_15ExecutorJobTypeE");
  if (closure != nullptr) {
    auto* head = static_cast<ClosureHead*>(closure);
    auto* scheduled = new ScheduledClosure{head, head->cb, head->cb_arg};
    head->cb = &ClosureTrampoline;
    head->cb_arg = scheduled;
    Release(scheduled);
  }
  real(closure, error, type, job_type);
}

}  // extern "C"

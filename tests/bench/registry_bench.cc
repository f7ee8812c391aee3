// registry_bench: prints what one registry write costs as the registry grows (a program, never a
// test; it uses only registry::Registry's public API, so it measures any version of it).
//
//   registry_bench                         # 10k, 100k and 1M subscriptions
//   registry_bench --sizes=10000,100000    # other sizes
//
// For each size and layout ("spread": 10 subscriptions per event; "one event": all of them in one
// event) it loads the registry with ReplaceAll, then times Upsert of a new subscription, Upsert of
// an existing one (a refresh: same id, new expiry), and Remove, each as the mean of as many calls
// as fit in a short budget, in this thread's CPU time and in wall time, and the resident memory
// the loaded index adds beside the subscriptions. Last, it times iterating a
// 10k-subscriber list the way Raise does
// (`for (const SubscriptionPtr& sub : *list)` checking LiveAt) against a plain std::vector of the
// same pointers, in the same run.
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "server/registry/registry.h"

namespace eventbus::registry {
namespace {

using Clock = std::chrono::steady_clock;

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

SubscriptionPtr MakeSub(size_t i, size_t events, absl::Duration expire) {
  auto sub = std::make_shared<Subscription>();
  char id[17];
  std::snprintf(id, sizeof id, "%016llx",
                static_cast<unsigned long long>(i * 0x9E3779B97F4A7C15ull));
  sub->id = id;
  sub->event = absl::StrCat("bench.event.", i % events);
  sub->socket = absl::StrCat("tcp:10.", (i >> 16) & 255, ".", (i >> 8) & 255, ".", i & 255, ":",
                             1000 + i % 50000);
  sub->create_time = kT0 + absl::Microseconds(i);
  sub->expire_time = kT0 + absl::Hours(1) + expire + absl::Microseconds(i);
  return sub;
}

// This thread's CPU time: on a machine shared with other work, wall time mostly measures them.
double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Resident memory now, in MiB (/proc/self/statm).
double RssMiB() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  long pages = 0, resident = 0;
  if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
  std::fclose(f);
  return resident * (sysconf(_SC_PAGESIZE) / 1048576.0);
}

struct Cost {
  double wall_us = 0;
  double cpu_us = 0;
  size_t ops = 0;
};

// Times `op(k)` for k = 0, 1, ... until `budget` seconds or `max_ops` calls; per call.
template <typename Op>
Cost PerOp(double budget, size_t max_ops, Op op) {
  Clock::time_point start = Clock::now();
  double cpu_start = ThreadCpuSeconds();
  size_t k = 0;
  while (k < max_ops && (k < 3 || SecondsSince(start) < budget)) op(k++);
  Cost cost;
  cost.cpu_us = (ThreadCpuSeconds() - cpu_start) * 1e6 / k;
  cost.wall_us = SecondsSince(start) * 1e6 / k;
  cost.ops = k;
  return cost;
}

void Measure(size_t n, bool one_event) {
  const size_t events = one_event ? 1 : std::max<size_t>(1, n / 10);
  std::vector<SubscriptionPtr> subs;
  subs.reserve(n);
  for (size_t i = 0; i < n; ++i) subs.push_back(MakeSub(i, events, absl::ZeroDuration()));
  const double rss_before = RssMiB();
  Registry registry;
  Clock::time_point start = Clock::now();
  double cpu_start = ThreadCpuSeconds();
  registry.ReplaceAll(subs);
  double load_cpu = ThreadCpuSeconds() - cpu_start;
  double load = SecondsSince(start);
  // What the index takes beside the subscriptions themselves (the allocator may keep some).
  const double index_mib = RssMiB() - rss_before;

  // New subscriptions land in existing events (spread) or the one event.
  Cost create = PerOp(
      0.5, 2000, [&](size_t k) { registry.Upsert(MakeSub(n + k, events, absl::ZeroDuration())); });
  Cost refresh = PerOp(0.5, 2000, [&](size_t k) {
    // Every 7919th subscription: spread over the registry, never the same twice in a row.
    registry.Upsert(MakeSub((k * 7919) % n, events, absl::Minutes(5)));
  });
  Cost remove = PerOp(0.5, 2000, [&](size_t k) { registry.Remove(subs[(k * 7919) % n]->id); });
  auto print = [](const char* what, const Cost& cost) {
    std::printf(" | %s %8.1f us cpu %8.1f wall (%zu)", what, cost.cpu_us, cost.wall_us, cost.ops);
  };
  std::printf("%8zu subs %-9s load %6.2f s cpu %6.2f wall, index %6.1f MiB", n,
              one_event ? "one event" : "spread", load_cpu, load, index_mib);
  print("Upsert new", create);
  print("refresh", refresh);
  print("Remove", remove);
  std::printf("\n");
  std::fflush(stdout);
}

void MeasureIteration() {
  constexpr size_t kN = 10000;
  std::vector<SubscriptionPtr> subs;
  for (size_t i = 0; i < kN; ++i) subs.push_back(MakeSub(i, 1, absl::ZeroDuration()));
  Registry registry;
  registry.ReplaceAll(subs);
  // The registry's list and a plain vector of the same pointers, in the same order.
  std::shared_ptr<const SubscriberList> list = registry.Subscribers("bench.event.0");
  std::vector<SubscriptionPtr> vector(subs);
  const absl::Time now = kT0 + absl::Minutes(1);
  constexpr int kPasses = 2000;
  size_t live = 0;
  Clock::time_point start = Clock::now();
  for (int pass = 0; pass < kPasses; ++pass) {
    for (const SubscriptionPtr& sub : *list) live += sub->LiveAt(now);
  }
  double list_ns = SecondsSince(start) * 1e9 / (double(kPasses) * kN);
  start = Clock::now();
  for (int pass = 0; pass < kPasses; ++pass) {
    for (const SubscriptionPtr& sub : vector) live += sub->LiveAt(now);
  }
  double vector_ns = SecondsSince(start) * 1e9 / (double(kPasses) * kN);
  std::printf(
      "Raise iteration over %zu subscribers: registry list %.2f ns/entry, std::vector "
      "%.2f ns/entry (x%.2f)   [live %zu]\n",
      list->size(), list_ns, vector_ns, list_ns / vector_ns, live);
}

}  // namespace
}  // namespace eventbus::registry

int main(int argc, char** argv) {
  std::vector<size_t> sizes = {10000, 100000, 1000000};
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--sizes=")) {
      sizes.clear();
      for (absl::string_view part : absl::StrSplit(arg, ',')) {
        size_t n;
        if (!absl::SimpleAtoi(part, &n) || n == 0) {
          std::fprintf(stderr, "registry_bench: --sizes: \"%s\" is not a positive count\n",
                       std::string(part).c_str());
          return 2;
        }
        sizes.push_back(n);
      }
    } else {
      std::fprintf(stderr, "registry_bench: unknown argument \"%s\" (try --sizes=10000,100000)\n",
                   argv[i]);
      return 2;
    }
  }
  for (size_t n : sizes) {
    for (bool one_event : {false, true}) {
      // Each in a child of its own: memory freed by one measurement must not flatter the next.
      std::fflush(stdout);
      pid_t child = fork();
      if (child == 0) {
        eventbus::registry::Measure(n, one_event);
        std::fflush(stdout);
        _exit(0);
      }
      int status = 0;
      if (child < 0 || waitpid(child, &status, 0) != child) {
        std::perror("registry_bench: fork");
        return 1;
      }
    }
  }
  eventbus::registry::MeasureIteration();
  return 0;
}

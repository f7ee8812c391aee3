#include "tests/bench/stream_phase.h"

#include <sys/resource.h>

#include <atomic>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/server_builder.h"
#include "tests/bench/sink.h"

namespace eventbus::bench {
namespace {

namespace v1 = ::eventbus::v1;

absl::Duration ProcessCpu() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return absl::DurationFromTimeval(ru.ru_utime) + absl::DurationFromTimeval(ru.ru_stime);
}

double NsPer(absl::Duration cpu, uint64_t n) {
  return n == 0 ? 0 : absl::ToDoubleNanoseconds(cpu) / static_cast<double>(n);
}

// The baseline's RaiseStream: answers each message with as many empty results as it has events,
// reading ahead while it writes (at most 16 answers waiting), and does nothing else.
class TrivialStreamService final : public v1::EventBusService::CallbackService {
 public:
  grpc::ServerBidiReactor<v1::RaiseStreamRequest, v1::RaiseStreamResponse>* RaiseStream(
      grpc::CallbackServerContext*) override {
    return new Reactor;
  }

 private:
  class Reactor final
      : public grpc::ServerBidiReactor<v1::RaiseStreamRequest, v1::RaiseStreamResponse> {
   public:
    Reactor() { StartRead(&request_); }

    void OnReadDone(bool ok) override {
      v1::RaiseStreamResponse* write = nullptr;
      bool read = false, finish = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!ok) {
          reads_done_ = true;
          reading_ = false;
          finish = !writing_ && answers_.empty();
        } else {
          answers_.emplace_back();
          for (int i = 0; i < request_.events_size(); ++i) answers_.back().add_results();
          if (!writing_) {
            writing_ = true;
            write = &answers_.front();
          }
          read = answers_.size() < 16;
          reading_ = read;
        }
      }
      if (write != nullptr) StartWrite(write);
      if (read) StartRead(&request_);
      if (finish) Finish(grpc::Status::OK);
    }

    void OnWriteDone(bool ok) override {
      v1::RaiseStreamResponse* write = nullptr;
      bool read = false, finish = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        writing_ = false;
        answers_.pop_front();
        if (ok && !answers_.empty()) {
          writing_ = true;
          write = &answers_.front();
        }
        if (!reading_ && !reads_done_ && ok) {
          reading_ = read = true;
        }
        finish = !writing_ && (reads_done_ || !ok) && !reading_;
      }
      if (write != nullptr) StartWrite(write);
      if (read) StartRead(&request_);
      if (finish) Finish(grpc::Status::OK);
    }

    void OnDone() override { delete this; }

   private:
    v1::RaiseStreamRequest request_;
    std::mutex mu_;
    std::deque<v1::RaiseStreamResponse> answers_;
    bool reading_ = true, writing_ = false, reads_done_ = false;
  };
};

struct StreamResult {
  uint64_t messages = 0;
  uint64_t events = 0;  // answered
  uint64_t errors = 0;  // error results, and failed deliveries listed
  absl::Duration elapsed;
  absl::Duration cpu;
  std::string status;  // "" when OK
};

// Writes `message` over one RaiseStream of `stub` as fast as the stream takes it for `duration`,
// reading every answer on this thread, then half-closes and reads the rest.
StreamResult Drive(v1::EventBusService::Stub* stub, const v1::RaiseStreamRequest& message,
                   absl::Duration duration) {
  StreamResult r;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + duration + absl::Seconds(60)));
  std::unique_ptr<grpc::ClientReaderWriter<v1::RaiseStreamRequest, v1::RaiseStreamResponse>>
      stream = stub->RaiseStream(&context);
  const absl::Duration cpu0 = ProcessCpu();
  const absl::Time start = absl::Now();
  const absl::Time end = start + duration;
  std::atomic<uint64_t> written{0};
  std::thread writer([&] {
    while (absl::Now() < end) {
      if (!stream->Write(message)) return;
      written.fetch_add(1, std::memory_order_relaxed);
    }
    stream->WritesDone();
  });
  v1::RaiseStreamResponse response;
  while (stream->Read(&response)) {
    ++r.messages;
    r.events += response.results_size();
    for (const v1::RaiseStreamResult& result : response.results()) {
      if (result.has_error()) ++r.errors;
      if (result.has_response()) r.errors += result.response().failed();
    }
  }
  writer.join();
  grpc::Status status = stream->Finish();
  r.elapsed = absl::Now() - start;
  r.cpu = ProcessCpu() - cpu0;
  if (!status.ok()) r.status = status.error_message();
  return r;
}

v1::RaiseStreamRequest Message(const std::string& event, int events) {
  v1::RaiseStreamRequest message;
  for (int i = 0; i < events; ++i) {
    v1::RaiseRequest* e = message.add_events();
    e->set_event(event);
    auto* p = e->mutable_named()->add_params();
    p->set_name("ip");
    p->mutable_value()->set_string_value("192.168.2.11");
    p = e->mutable_named()->add_params();
    p->set_name("count");
    p->mutable_value()->set_number_value(3);
    e->set_sync(false);
  }
  return message;
}

struct Baseline {
  double events_per_s = 0;
  double ns_per_event = 0;
};

}  // namespace

void RunStreamPhase(client::Client& client, const StreamPhaseOptions& options) {
  const int batch = options.batch;
  // The baseline: a trivial streaming server in this process.
  TrivialStreamService trivial_service;
  int trivial_port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &trivial_port);
  builder.RegisterService(&trivial_service);
  std::unique_ptr<grpc::Server> trivial_server = builder.BuildAndStart();
  if (trivial_server == nullptr) {
    std::printf("stream: the trivial baseline server did not start\n");
    return;
  }
  auto trivial_stub = v1::EventBusService::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", trivial_port), grpc::InsecureChannelCredentials()));
  Baseline base[2];  // [0]: batched, [1]: one event per message
  for (int k = 0; k < 2; ++k) {
    const int per = k == 0 ? batch : 1;
    StreamResult r = Drive(trivial_stub.get(), Message("BENCH_STREAM", per), options.duration);
    base[k].events_per_s = r.events / absl::ToDoubleSeconds(r.elapsed);
    base[k].ns_per_event = NsPer(r.cpu, r.events);
    std::printf(
        "baseline, trivial stream, %2d events/msg: %9.0f events/s  CPU/event %6.0f ns%s%s\n", per,
        base[k].events_per_s, base[k].ns_per_event,
        r.status.empty() ? "" : "  failed: ", r.status.c_str());
  }
  trivial_server->Shutdown();

  struct Run {
    int subscribers;
    int per_message;
    int baseline;
    const char* target;
  };
  const Run runs[] = {{1, batch, 0, ">= 1M events/s"},
                      {1, 1, 1, ">= 300k events/s"},
                      {100, batch, 0, ">= 4M msgs/s"}};
  for (const Run& run : runs) {
    std::vector<std::unique_ptr<Sink>> sinks;
    // An event of its own per run: the previous run's sinks are gone.
    const std::string event = absl::StrCat("BENCH_STREAM_", run.subscribers, "_", run.per_message);
    for (int i = 0; i < run.subscribers; ++i) {
      sinks.push_back(std::make_unique<Sink>(/*reply=*/false));
      v1::SubscribeRequest sub;
      sub.set_event(event);
      sub.set_socket(sinks.back()->socket());
      sub.set_expire_seconds(0);
      if (!client.Subscribe(sub).ok()) {
        std::printf("stream: subscribe failed\n");
        return;
      }
    }
    const absl::Duration server0 = options.server_cpu ? options.server_cpu() : absl::ZeroDuration();
    StreamResult r = Drive(client.stub(), Message(event, run.per_message), options.duration);
    // Deliveries count when the sinks have them: wait (bounded) for the tail.
    const uint64_t expected = r.events * run.subscribers - r.errors;
    const absl::Time wait_start = absl::Now();
    const absl::Duration cpu0 = ProcessCpu();
    uint64_t got = 0;
    while (absl::Now() < wait_start + absl::Seconds(30)) {
      got = 0;
      for (auto& s : sinks) got += s->messages();
      if (got >= expected) break;
      absl::SleepFor(absl::Milliseconds(5));
    }
    const absl::Duration all = r.elapsed + (absl::Now() - wait_start);
    const absl::Duration cpu = r.cpu + (ProcessCpu() - cpu0);
    const double rate = got / absl::ToDoubleSeconds(all);
    const double ns = NsPer(cpu, got);
    const std::string server =
        options.server_cpu
            ? absl::StrFormat("  server %4.0f ns", NsPer(options.server_cpu() - server0, got))
            : "";
    const Baseline& b = base[run.baseline];
    std::printf(
        "stream, %3d subscriber%s, %2d events/msg: %9.0f %s/s delivered = %.2fx baseline  "
        "CPU/msg %6.0f ns = %.2fx baseline%s  (%llu/%llu received, %llu failed; target %s)%s%s\n",
        run.subscribers, run.subscribers == 1 ? " " : "s", run.per_message, rate,
        run.subscribers == 1 ? "events" : "  msgs", rate / b.events_per_s, ns, ns / b.ns_per_event,
        server.c_str(), static_cast<unsigned long long>(got),
        static_cast<unsigned long long>(expected), static_cast<unsigned long long>(r.errors),
        run.target, r.status.empty() ? "" : "  stream failed: ", r.status.c_str());
  }
}

}  // namespace eventbus::bench

// The persistent worker pool behind every multi-threaded kernel.
#include "core/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <chrono>

#include "core/error.h"

namespace qr {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// How long a waiting thread spins before it sleeps. A wake-up through the kernel costs tens of
// microseconds, as much as a whole small layer, and layers come back to back with a little Python
// in between. Measured in time, not in pause instructions, whose length differs between CPUs by
// more than 10x.
constexpr auto kSpinTime = std::chrono::microseconds(200);

// Spins until done() or kSpinTime has passed; true if done() became true.
template <class Done>
bool spin_until(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpinTime;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return done();
  }
}

}  // namespace

// One parallel_for. Workers hold it by shared_ptr, so a worker that wakes late still reads valid
// counters, and it finds no task left to run: fn (on the caller's stack) is only called for
// indices below size, all of which finish before the caller returns.
struct ThreadPool::Job {
  // Thread t's range of indices: [next, end), next counting up as tasks are taken.
  struct alignas(64) Range {
    std::atomic<int64_t> next{0};
    int64_t end = 0;
  };
  Job(const std::function<void(int64_t)>* f, int64_t n, int threads) : fn(f), size(n), ranges(threads) {
    for (int t = 0; t < threads; ++t) {
      ranges[t].next = n * t / threads;
      ranges[t].end = n * (t + 1) / threads;
    }
  }
  const std::function<void(int64_t)>* fn;
  int64_t size;
  std::vector<Range> ranges;  // one per thread
  std::atomic<int64_t> done{0};
  std::atomic<bool> failed{false};
  std::mutex mutex;
  std::condition_variable all_done;
  std::exception_ptr error;
};

int affinity_cpu_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc ? static_cast<int>(hc) : 1;
}

ThreadPool& ThreadPool::global() {
  // Leaked on purpose: worker threads must not be joined during static destruction at exit.
  static ThreadPool* pool = new ThreadPool(affinity_cpu_count());
  return *pool;
}

ThreadPool::ThreadPool(int threads) { start_workers(std::max(1, threads)); }

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::set_num_threads(int threads) {
  QR_CHECK_ARG(threads >= 1, "threads must be >= 1");
  std::lock_guard<std::mutex> lock(submit_mutex_);
  if (threads == threads_.load()) return;
  stop_workers();
  start_workers(threads);
}

void ThreadPool::start_workers(int threads) {
  {
    std::lock_guard<std::mutex> lock(wake_mutex_);
    stopping_ = false;
  }
  threads_ = threads;
  // Each worker starts from the generation current now, so a job published before the thread
  // first runs is still seen as new.
  const uint64_t start = generation_.load();
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, start, i] { worker_loop(start, i); });
}

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(wake_mutex_);
    stopping_ = true;
    generation_.fetch_add(1);
  }
  wake_cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::run_tasks(Job& job, int self) {
  const size_t parts = job.ranges.size();
  for (size_t r = 0; r < parts; ++r) {
    Job::Range& range = job.ranges[(self + r) % parts];
    for (;;) {
      const int64_t i = range.next.fetch_add(1);
      if (i >= range.end) break;
      run_task(job, i);
    }
  }
}

namespace {
// Set while this thread runs a task: a parallel_for from inside a task (a transformer linear's GEMM on
// its own rows) runs inline, never touching the submit mutex its own thread may hold.
thread_local bool t_in_task = false;
}  // namespace

void ThreadPool::run_task(Job& job, int64_t i) {
  if (!job.failed.load(std::memory_order_relaxed)) {
    const bool outer = t_in_task;
    t_in_task = true;
    try {
      (*job.fn)(i);
      t_in_task = outer;
    } catch (...) {
      t_in_task = outer;
      std::lock_guard<std::mutex> lock(job.mutex);
      if (!job.error) job.error = std::current_exception();
      job.failed = true;
    }
  }
  if (job.done.fetch_add(1, std::memory_order_acq_rel) + 1 == job.size) {
    std::lock_guard<std::mutex> lock(job.mutex);
    job.all_done.notify_all();
  }
}

void ThreadPool::worker_loop(uint64_t seen, int self) {
  for (;;) {
    spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; });
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(wake_mutex_);
      wake_cv_.wait(lock, [&] { return generation_.load() != seen; });
      seen = generation_.load();
      if (stopping_) return;
      job = current_;
    }
    if (job) run_tasks(*job, self);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (t_in_task) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::unique_lock<std::mutex> submit(submit_mutex_, std::try_to_lock);
  if (!submit.owns_lock() || workers_.empty() || n == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  auto job = std::make_shared<Job>(&fn, n, static_cast<int>(workers_.size()) + 1);
  {
    std::lock_guard<std::mutex> lock(wake_mutex_);
    current_ = job;
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_cv_.notify_all();
  run_tasks(*job, 0);
  spin_until([&] { return job->done.load(std::memory_order_acquire) == n; });
  if (job->done.load(std::memory_order_acquire) != n) {
    std::unique_lock<std::mutex> lock(job->mutex);
    job->all_done.wait(lock, [&] { return job->done.load() == n; });
  }
  {
    std::lock_guard<std::mutex> lock(wake_mutex_);
    current_.reset();  // workers that wake late find no job rather than a finished one
  }
  if (job->error) std::rethrow_exception(job->error);
}

}  // namespace qr

// The persistent worker pool behind every multi-threaded kernel.
#include "core/thread_pool.h"

#include <sched.h>

#include <algorithm>

#include "core/error.h"

namespace qr {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spin this many rounds before sleeping: a wake-up through the kernel costs tens of microseconds,
// longer than many whole layers at batch 1.
constexpr int kSpinRounds = 20000;

}  // namespace

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
  stopping_ = false;
  threads_ = threads;
  // Each worker starts from the generation current now, so a job published before the thread
  // first runs is still seen as new.
  uint64_t start = generation_.load();
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, start] { worker_loop(start); });
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

void ThreadPool::run_tasks() {
  for (;;) {
    int64_t i = next_.fetch_add(1);
    if (i >= job_size_) return;
    try {
      (*job_)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (!error_) error_ = std::current_exception();
      next_.store(job_size_);  // stop handing out work
    }
  }
}

void ThreadPool::worker_loop(uint64_t seen) {
  for (;;) {
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && spins < kSpinRounds) {
      cpu_relax();
      ++spins;
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(wake_mutex_);
      wake_cv_.wait(lock, [&] { return generation_.load() != seen; });
    }
    seen = generation_.load();
    if (stopping_) return;
    run_tasks();
    if (busy_workers_.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(wake_mutex_);
      done_cv_.notify_all();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  std::unique_lock<std::mutex> submit(submit_mutex_, std::try_to_lock);
  if (!submit.owns_lock() || workers_.empty() || n == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  job_ = &fn;
  job_size_ = n;
  next_ = 0;
  error_ = nullptr;
  busy_workers_ = static_cast<int>(workers_.size());
  {
    std::lock_guard<std::mutex> lock(wake_mutex_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_cv_.notify_all();
  run_tasks();
  int spins = 0;
  while (busy_workers_.load(std::memory_order_acquire) != 0 && spins < kSpinRounds) {
    cpu_relax();
    ++spins;
  }
  if (busy_workers_.load() != 0) {
    std::unique_lock<std::mutex> lock(wake_mutex_);
    done_cv_.wait(lock, [&] { return busy_workers_.load() == 0; });
  }
  job_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

}  // namespace qr

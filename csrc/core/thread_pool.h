// A persistent pool of std::threads (no OpenMP, so it can live beside torch's pool in one process).
//
// parallel_for hands out task indices from an atomic counter; the calling thread works too. Results
// never depend on the thread count because callers make each task own whole output elements.
// A second caller arriving while the pool is busy (Model.run from several Python threads) runs its
// tasks inline on its own thread instead of waiting: same results, no deadlock.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qr {

class ThreadPool {
 public:
  // The process-wide pool, sized to the CPUs in the affinity mask on first use.
  static ThreadPool& global();

  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void set_num_threads(int threads);
  int num_threads() const { return threads_.load(); }

  // Runs fn(i) for every i in [0, n); returns when all are done; rethrows the first exception.
  void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

 private:
  void start_workers(int threads);
  void stop_workers();
  void worker_loop(uint64_t start_generation);
  void run_tasks();

  std::atomic<int> threads_{1};
  std::vector<std::thread> workers_;
  std::mutex submit_mutex_;  // one parallel_for at a time uses the workers

  // The current job, published by bumping generation_.
  std::mutex wake_mutex_;
  std::condition_variable wake_cv_;
  std::condition_variable done_cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t job_size_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int> busy_workers_{0};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

// CPUs in this process's affinity mask (at least 1).
int affinity_cpu_count();

}  // namespace qr

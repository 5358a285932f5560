// A persistent pool of std::threads (no OpenMP, so it can live beside torch's pool in one process).
//
// parallel_for splits the task indices into one contiguous range per thread (the calling thread
// is thread 0 and works too). Each thread runs its own range first, then takes what is left of
// the others'. The same thread thus gets the same part of consecutive ops' outputs (the first
// rows of a conv and of the op that reads it), which stay in its core's cache. The caller waits
// only for tasks, never for workers to check in: when a worker is descheduled (another process
// on the core), the caller simply runs every task itself. A second caller that
// arrives while the pool is busy (Model.run from several Python threads) runs its tasks inline, and
// so does a parallel_for called from inside a task.
// Results never depend on the thread count because callers make each task own whole outputs.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
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

  // Runs fn(i) for every i in [0, n); returns when all are done; rethrows the first exception
  // (tasks not yet started when it was thrown are skipped).
  void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

 private:
  struct Job;
  void start_workers(int threads);
  void stop_workers();
  void worker_loop(uint64_t start_generation, int self);
  // Thread `self` runs its own range of the job's tasks, then what is left of the others'.
  static void run_tasks(Job& job, int self);
  static void run_task(Job& job, int64_t i);

  std::atomic<int> threads_{1};
  std::vector<std::thread> workers_;
  std::mutex submit_mutex_;  // one parallel_for at a time uses the workers

  std::mutex wake_mutex_;
  std::condition_variable wake_cv_;
  std::atomic<uint64_t> generation_{0};
  bool stopping_ = false;             // guarded by wake_mutex_
  std::shared_ptr<Job> current_;      // guarded by wake_mutex_
};

// CPUs in this process's affinity mask (at least 1).
int affinity_cpu_count();

}  // namespace qr

// Compiled (never linked) by the thread_safety_analysis_* ctests, which prove
// that the clang builds of `make test` reject a guarded member touched
// without its lock. UNGUARDED selects the defect.
#include "membrane/mutex.h"

namespace {

class Counter {
 public:
  void add() {
#ifdef UNGUARDED
    ++value_;  // the defect: no lock held
#else
    membrane::MutexLock lk(mu_);
    ++value_;
#endif
  }
  // Slow work in the middle of a locked section releases the lock for it
  // (MutexUnlock); the analysis rejects guarded state touched meanwhile.
  void addAroundSlowWork() {
    membrane::MutexLock lk(mu_);
    ++value_;
    {
      membrane::MutexUnlock unlocked(mu_);
#ifdef TOUCHED_WHILE_UNLOCKED
      ++value_;  // the defect: the lock is released here
#endif
    }
    ++value_;  // held again
  }
  int read() {
    if (!mu_.try_lock_for(std::chrono::milliseconds(1))) return -1;
    membrane::MutexLock lk(mu_, std::adopt_lock);
    return value_;
  }

 private:
  membrane::TimedMutex mu_;
  int value_ GUARDED_BY(mu_) = 0;
};

}  // namespace

int useCounter() {
  Counter c;
  c.add();
  c.addAroundSlowWork();
  return c.read();
}

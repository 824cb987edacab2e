// Clang thread-safety analysis attributes (-Wthread-safety), no-ops elsewhere.
//
// The sanitizer builds of `make test` use clang with -Wthread-safety
// -Werror: a read of a GUARDED_BY member without its lock, or a call to a
// REQUIRES function without it, fails the build. Only membrane::Mutex,
// membrane::TimedMutex and membrane::MutexLock are annotated (libstdc++'s
// std::mutex and std::lock_guard are not), so guarded state uses those.
// https://clang.llvm.org/docs/ThreadSafetyAnalysis.html
#pragma once

#if defined(__clang__)
#define MEMBRANE_TSA(x) __attribute__((x))
#else
#define MEMBRANE_TSA(x)
#endif

#define CAPABILITY(x) MEMBRANE_TSA(capability(x))
#define SCOPED_CAPABILITY MEMBRANE_TSA(scoped_lockable)
#define GUARDED_BY(x) MEMBRANE_TSA(guarded_by(x))
#define PT_GUARDED_BY(x) MEMBRANE_TSA(pt_guarded_by(x))
#define REQUIRES(...) MEMBRANE_TSA(requires_capability(__VA_ARGS__))
#define ACQUIRE(...) MEMBRANE_TSA(acquire_capability(__VA_ARGS__))
#define RELEASE(...) MEMBRANE_TSA(release_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) MEMBRANE_TSA(try_acquire_capability(__VA_ARGS__))
#define EXCLUDES(...) MEMBRANE_TSA(locks_excluded(__VA_ARGS__))
#define RETURN_CAPABILITY(x) MEMBRANE_TSA(lock_returned(x))
#define NO_THREAD_SAFETY_ANALYSIS MEMBRANE_TSA(no_thread_safety_analysis)

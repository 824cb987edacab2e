// Result<T>: a value or an Error {errno-like code, context message}.
//
// Every fallible boundary in membrane returns Result<T> (no exceptions across
// module boundaries). Errors collect context on the way up:
//   return err.wrap("create endpoint xwing");
//   => "create endpoint xwing: attach tc ingress on lxc1a2b: Operation not permitted"
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace membrane {

// strerror() for any thread: strerror may return a static buffer that another
// thread overwrites (clang-tidy concurrency-mt-unsafe); glibc's GNU
// strerror_r returns either a static string or one written into buf.
inline std::string errnoText(int code) {
  char buf[128];
  return ::strerror_r(code, buf, sizeof buf);
}

struct Error {
  int code = EINVAL;     // errno-like (positive); EINVAL for bad input
  std::string message;   // human text, outermost context first

  Error() = default;
  Error(int c, std::string m) : code(c), message(std::move(m)) {}

  // Adds context in front: "<ctx>: <message>".
  [[nodiscard]] Error wrap(const std::string& ctx) const& { return Error(code, ctx + ": " + message); }
  [[nodiscard]] Error wrap(const std::string& ctx) && { return Error(code, ctx + ": " + message); }

  // From errno: "<what>: <strerror(code)>".
  static Error fromErrno(int code, const std::string& what) {
    if (code < 0) code = -code;
    return Error(code, what + ": " + errnoText(code));
  }
  static Error invalid(std::string m) { return Error(EINVAL, std::move(m)); }
  static Error notFound(std::string m) { return Error(ENOENT, std::move(m)); }
  static Error exists(std::string m) { return Error(EEXIST, std::move(m)); }
};

// Aborts with a message: only for states that cannot happen unless membrane
// itself is wrong. Never for input or for what the kernel answers.
#define MB_CHECK(cond)                                                              \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: MB_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}    // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { MB_CHECK(ok()); return std::get<0>(v_); }
  const T& value() const& { MB_CHECK(ok()); return std::get<0>(v_); }
  T&& value() && { MB_CHECK(ok()); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { MB_CHECK(!ok()); return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : err_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { MB_CHECK(!ok_); return err_; }

 private:
  Error err_;
  bool ok_ = true;
};

using Status = Result<void>;
inline Status okStatus() { return Status(); }

}  // namespace membrane

// MB_TRY(expr): evaluate a Result<void>; on error return it (optionally wrapped).
#define MB_CONCAT_(a, b) a##b
#define MB_CONCAT(a, b) MB_CONCAT_(a, b)
#define MB_TRY(expr)                                           \
  do {                                                         \
    auto MB_CONCAT(mb_r_, __LINE__) = (expr);                  \
    if (!MB_CONCAT(mb_r_, __LINE__).ok())                      \
      return MB_CONCAT(mb_r_, __LINE__).error();               \
  } while (0)
#define MB_TRY_CTX(expr, ctx)                                  \
  do {                                                         \
    auto MB_CONCAT(mb_r_, __LINE__) = (expr);                  \
    if (!MB_CONCAT(mb_r_, __LINE__).ok())                      \
      return MB_CONCAT(mb_r_, __LINE__).error().wrap(ctx);     \
  } while (0)
// MB_ASSIGN(lhs, expr): lhs = value of a Result<T>, or return its error.
#define MB_ASSIGN(lhs, expr)                                   \
  auto MB_CONCAT(mb_a_, __LINE__) = (expr);                    \
  if (!MB_CONCAT(mb_a_, __LINE__).ok())                        \
    return MB_CONCAT(mb_a_, __LINE__).error();                 \
  lhs = std::move(MB_CONCAT(mb_a_, __LINE__)).value() /* NOLINT(bugprone-macro-parentheses): lhs may be a declaration */

// UnlockedHook: how a component that runs under its caller's lock lets the
// caller release that lock around one slow step (a process start, netlink
// calls that create or delete a network namespace and its veth).
//
// The agent passes a hook that releases its state lock and runs fn: API
// readers answer meanwhile. The component touches none of its own state
// inside fn, and the caller keeps holding its change lock, so no other
// writer can run in between (src/daemon/agent.h). Empty hook: fn runs in place.
#pragma once

#include <functional>
#include <optional>
#include <type_traits>
#include <utility>

namespace membrane {

using UnlockedHook = std::function<void(const std::function<void()>& fn)>;

// f() through `hook` (or in place when it is empty); returns what f returned.
template <class F>
std::invoke_result_t<F&> runUnlocked(const UnlockedHook& hook, F&& f) {
  using R = std::invoke_result_t<F&>;
  if (!hook) return f();
  if constexpr (std::is_void_v<R>) {
    hook([&] { f(); });
  } else {
    std::optional<R> out;
    hook([&] { out.emplace(f()); });
    return std::move(*out);
  }
}

}  // namespace membrane

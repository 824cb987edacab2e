// Test support: run commands and own child processes (killed by PID on scope
// exit, never by name), wait for conditions with a deadline, HTTP GET on
// loopback. For tests only.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace membrane::testing {

struct RunResult {
  int exit_code = -1;  // -1 when killed by the timeout or a signal
  std::string out;
  std::string err;
};

// Runs argv to completion (or kills it after timeout), capturing output.
RunResult run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = std::chrono::seconds(30),
              const std::string& stdin_text = "");

// A background child process, SIGTERM then SIGKILL on destruction.
class Child {
 public:
  Child() = default;
  // stdout+stderr go to log_path (truncated).
  static Child spawn(const std::vector<std::string>& argv, const std::string& log_path);
  ~Child();
  Child(Child&& o) noexcept;
  Child& operator=(Child&& o) noexcept;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  int pid() const { return pid_; }
  bool running();
  // Sends sig and waits up to timeout for exit; returns the exit status or -1.
  int stop(int sig = 15, std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  int pid_ = -1;
};

// Polls cond every 50 ms until true or the deadline passes.
bool waitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout);

// GET http://127.0.0.1:<port><path>; returns the body, or "" on failure.
std::string httpGet(int port, const std::string& path);

// A free TCP port on 127.0.0.1 (bind to 0, read, close).
int freePort();

std::string readFileOrEmpty(const std::string& path);

// Waits (at most 10 s) until the `membrane monitor` logging to 'log' (stdout
// and stderr, as Child::spawn writes them) printed its banner: from then on
// the agent delivers every event to it.
bool waitForMonitorListening(const std::string& log);

}  // namespace membrane::testing

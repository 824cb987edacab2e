// Test support: a private etcd (Debian's /usr/bin/etcd) for one test binary.
// It listens on free loopback ports (never 2379/2380, where Debian's packaged
// service would be), keeps its data in its own directory under /tmp, runs with
// --unsafe-no-fsync, and is killed (by PID) and its directory removed when the
// object goes, also when a test fails. For tests only.
#pragma once

#include <memory>
#include <string>

#include "tests/support/process.h"

namespace membrane::testing {

class EtcdProcess {
 public:
  static constexpr const char* kBinary = "/usr/bin/etcd";

  // Starts etcd and waits (at most 20 s) until GET /health answers healthy.
  // nullptr on failure, with *error saying why (and the log's tail).
  static std::unique_ptr<EtcdProcess> start(std::string* error);
  ~EtcdProcess();
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;

  // "http://127.0.0.1:<port>"
  std::string clientUrl() const;
  int clientPort() const { return client_port_; }
  int pid() const { return child_.pid(); }
  // SIGTERM, waits for the exit (SIGKILL after 10 s). Data stays.
  void stop();
  // Starts it again on the same ports and data; waits until healthy.
  bool restart(std::string* error);
  std::string log() const;

 private:
  EtcdProcess() = default;
  bool launch(std::string* error);

  std::string dir_;  // holds data/ and etcd.log
  int client_port_ = 0;
  int peer_port_ = 0;
  Child child_;
};

}  // namespace membrane::testing

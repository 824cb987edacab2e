#include "tests/support/etcd_process.h"

#include <fmt/format.h>
#include <unistd.h>

#include <csignal>

#include <filesystem>

namespace membrane::testing {

std::unique_ptr<EtcdProcess> EtcdProcess::start(std::string* error) {
  if (access(kBinary, X_OK) != 0) {
    *error = fmt::format("{} not found: install it with `apt-get install etcd-server etcd-client` (make deps)", kBinary);
    return nullptr;
  }
  std::unique_ptr<EtcdProcess> p(new EtcdProcess());
  char tmpl[] = "/tmp/membrane-etcd-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    *error = "mkdtemp failed";
    return nullptr;
  }
  p->dir_ = tmpl;
  p->client_port_ = freePort();
  p->peer_port_ = freePort();
  if (!p->launch(error)) return nullptr;  // the destructor removes the directory
  return p;
}

EtcdProcess::~EtcdProcess() {
  child_.stop(SIGKILL, std::chrono::seconds(10));
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

std::string EtcdProcess::clientUrl() const { return fmt::format("http://127.0.0.1:{}", client_port_); }

std::string EtcdProcess::log() const { return readFileOrEmpty(dir_ + "/etcd.log"); }

bool EtcdProcess::launch(std::string* error) {
  const std::string client = clientUrl();
  const std::string peer = fmt::format("http://127.0.0.1:{}", peer_port_);
  child_ = Child::spawn({kBinary, "--name", "n1", "--data-dir", dir_ + "/data", "--listen-client-urls", client,
                         "--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls",
                         peer, "--initial-cluster", "n1=" + peer, "--unsafe-no-fsync", "--logger=zap",
                         "--log-outputs=stderr"},
                        dir_ + "/etcd.log");
  bool healthy = waitFor(
      [&] {
        return child_.running() && httpGet(client_port_, "/health").find("\"health\":\"true\"") != std::string::npos;
      },
      std::chrono::seconds(20));
  if (!healthy) {
    std::string l = log();
    *error = fmt::format("etcd on {} not healthy within 20 s; log tail:\n{}", client,
                         l.size() > 2000 ? l.substr(l.size() - 2000) : l);
    child_.stop(SIGKILL, std::chrono::seconds(10));
  }
  return healthy;
}

void EtcdProcess::stop() { child_.stop(SIGTERM, std::chrono::seconds(10)); }

bool EtcdProcess::restart(std::string* error) {
  stop();
  return launch(error);
}

}  // namespace membrane::testing

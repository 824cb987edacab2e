// One name per agent instance (--instance NAME) and the ownership of what an
// agent holds on a host.
//
// applyInstance() derives every per-agent name from NAME (socket, state dir,
// BPF root, host device, pod and service CIDRs, metrics port, proxy socket,
// ports, route table, rule priority, iptables chain), leaving alone what the
// user set explicitly. The
// numbers come from a slot in 1..250 hashed from NAME, so two names can land
// on one slot: the ownership locks then refuse the second agent by name.
//
// OwnershipLocks: flock(2) locks, one per resource (state dir, BPF root, host
// device, API socket, pod and service CIDR, metrics address, proxy socket,
// ports, route table, rule priority, iptables chain; equal values only, not
// overlapping CIDRs or port ranges), as files under a lock directory
// (/run/membrane/locks) holding the owner's pid. The kernel drops a lock when
// its process dies, so a crashed agent never blocks the next one; a clean
// exit also removes the files. A lock counts only if the file it was taken
// on is still the one at its path (a file removed by its exiting owner
// between our open() and flock() is retried), so two agents never both hold
// one resource. A second
// agent or `membraned cleanup` on resources another live agent holds is
// refused with a message naming that process.
//
// Thread-safety: none needed (used once at start-up, from main()).
#pragma once

#include <set>
#include <string>
#include <vector>

#include "membrane/result.h"
#include "membrane/unique_fd.h"
#include "src/daemon/config.h"

namespace membrane::daemon {

// NAME: 1..10 of [a-z0-9-], starting with a letter or digit. Fields whose
// flag is in 'explicit_flags' ("--state-dir", ...) keep their value.
Status applyInstance(Config& cfg, const std::string& name, const std::set<std::string>& explicit_flags);
// The slot NAME's numbers are derived from (1..250).
unsigned instanceSlot(const std::string& name);

class OwnershipLocks {
 public:
  // Takes every lock of 'cfg' (all or none); the error names the resource
  // and the process that holds it.
  static Result<OwnershipLocks> acquire(const Config& cfg, const std::string& lock_dir = "/run/membrane/locks");
  // The (resource, value) pairs an agent with 'cfg' owns.
  static std::vector<std::pair<std::string, std::string>> resources(const Config& cfg);

  OwnershipLocks(OwnershipLocks&&) = default;
  OwnershipLocks& operator=(OwnershipLocks&&) = default;
  // Removes the lock files (still holding the locks), then releases them.
  ~OwnershipLocks();
  size_t size() const { return held_.size(); }

 private:
  OwnershipLocks() = default;
  struct Held {
    std::string path;
    UniqueFd fd;
  };
  std::vector<Held> held_;
};

}  // namespace membrane::daemon

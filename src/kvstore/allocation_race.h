// Test support: several threads on each of several allocators (nodes)
// allocate the same label sets, each thread in its own order, and the check
// that the cluster agreed: one number per label set, one label set per
// number. Used by the unit test (MemoryBackend) and the etcd integration test.
// Never linked into a binary.
#pragma once

#include <fmt/format.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "src/kvstore/cluster_identity.h"

namespace membrane::kvstore {

// Runs `threads_per_node` threads per node; each allocates every set once.
// Returns "" when every allocation succeeded, every thread got the same number
// for a label set and different label sets got different numbers; else what
// went wrong.
inline std::string raceAllocations(const std::vector<ClusterIdentityAllocator*>& nodes,
                                   const std::vector<labels::LabelSet>& sets, int threads_per_node) {
  const size_t n_threads = nodes.size() * static_cast<size_t>(threads_per_node);
  std::vector<std::vector<uint32_t>> got(n_threads, std::vector<uint32_t>(sets.size()));
  std::vector<std::string> errors(n_threads);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < n_threads; t++) {
    threads.emplace_back([&, t] {
      ClusterIdentityAllocator& node = *nodes[t % nodes.size()];
      for (size_t k = 0; k < sets.size(); k++) {
        size_t i = (k * 5 + t) % sets.size();  // each thread its own order
        auto id = node.allocate(sets[i]);
        if (!id.ok()) {
          errors[t] = id.error().message;
          return;
        }
        got[t][i] = *id;
      }
    });
  }
  for (auto& th : threads) th.join();
  for (size_t t = 0; t < n_threads; t++)
    if (!errors[t].empty()) return fmt::format("thread {}: {}", t, errors[t]);
  std::set<uint32_t> distinct;
  for (size_t i = 0; i < sets.size(); i++) {
    for (size_t t = 1; t < n_threads; t++)
      if (got[t][i] != got[0][i])
        return fmt::format("label set {}: thread 0 got {}, thread {} got {}", i, got[0][i], t, got[t][i]);
    distinct.insert(got[0][i]);
  }
  if (distinct.size() != sets.size())
    return fmt::format("{} label sets got {} distinct numbers", sets.size(), distinct.size());
  return "";
}

}  // namespace membrane::kvstore

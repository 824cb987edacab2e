// Security identities: a number per distinct label set, shared by every
// endpoint with that label set (Cilium's numeric identity). Numbers end up in
// BPF maps (ipcache, policy keys), so they must stay stable across restarts:
// restore() re-seeds them from persisted state.
//
// Thread-safety: none. IdentityAllocator is used under the caller's lock.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "bpf/shared/datapath.h"
#include "membrane/labels.h"
#include "membrane/result.h"

namespace membrane::identity {

inline constexpr uint32_t kMinAllocated = MB_ID_MIN_ALLOCATED;
inline constexpr uint32_t kMaxAllocated = 65535;  // cluster-scope identities (cluster id 0)
// Cilium's local scope (CIDR/FQDN identities, never leave the node) starts here.
inline constexpr uint32_t kLocalScopeFlag = 1u << 24;
// Range for CIDR identities: IdentityAllocator(kMinLocal, kMaxLocal) hands
// them out (labels from labels::cidrIdentityLabels()).
inline constexpr uint32_t kMinLocal = kLocalScopeFlag | 1;
inline constexpr uint32_t kMaxLocal = kLocalScopeFlag | 0xffffff;
inline bool isLocalScope(uint32_t id) { return (id & kLocalScopeFlag) != 0; }

struct Identity {
  uint32_t id = 0;
  labels::LabelSet labels;
  uint32_t refs = 0;      // endpoints holding it; 0 for reserved identities
  bool reserved = false;  // 1..7: fixed, never allocated or released
};

// A borrowed view of one identity for policy resolution: every identity the
// node knows (allocated and reserved). `labels` must outlive the resolution.
struct IdentityRef {
  uint32_t id = 0;
  const labels::LabelSet* labels = nullptr;
};

class IdentityAllocator {
 public:
  // Numbers are allocated from [min_id, max_id]; tests shrink the range to
  // reach exhaustion quickly. Requires kMinAllocated <= min_id <= max_id.
  explicit IdentityAllocator(uint32_t min_id = kMinAllocated, uint32_t max_id = kMaxAllocated);

  // Returns the identity of `labels`, taking one reference. Equal label sets
  // share one number; a new set gets the lowest free number. A label set equal
  // to a reserved one ({reserved:host}, ...) returns that reserved identity
  // (no refcount). Errors: empty label set (EINVAL), range exhausted (ENOSPC).
  Result<Identity> allocate(const labels::LabelSet& labels);

  // Drops one reference; the number is freed with the last one. Returns false
  // for unknown or reserved ids (nothing changes).
  bool release(uint32_t id);

  // Re-seeds `id` for `labels` after an agent restart (the numbers are in
  // pinned BPF maps). Restoring the same (id, labels) again takes another
  // reference. Errors: id outside the range (EINVAL), id bound to other
  // labels or labels bound to another id (EEXIST).
  Status restore(uint32_t id, const labels::LabelSet& labels);

  std::optional<Identity> lookup(uint32_t id) const;
  std::optional<Identity> lookup(const labels::LabelSet& labels) const;

  // Reserved identities 1..7 first, then allocated ones, ascending by id.
  std::vector<Identity> list() const;

  // Views for IdentityRef-based policy resolution, same order as list().
  // Valid until the next allocate/release/restore.
  std::vector<IdentityRef> refs() const;

 private:
  struct Entry {
    labels::LabelSet labels;
    uint32_t refs = 0;
  };
  std::optional<uint32_t> lowestFree() const;

  uint32_t min_id_;
  uint32_t max_id_;
  std::map<uint32_t, Entry> by_id_;                  // allocated only
  std::map<labels::LabelSet, uint32_t> by_labels_;   // allocated only
  std::map<uint32_t, labels::LabelSet> reserved_;    // 1..7, fixed
};

}  // namespace membrane::identity

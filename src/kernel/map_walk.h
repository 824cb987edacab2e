// Walking a BPF hash map while the datapath changes it.
//
// BPF_MAP_GET_NEXT_KEY with a key that is no longer in the map does not fail:
// the kernel answers with the map's first key, so a walk whose current entry
// was deleted underneath (an expiry, a flush, another walker) silently starts
// over. walkMap() notices it the way Cilium's conntrack GC does: after asking
// for the next key it looks the current key up; if that entry is gone, the
// next key cannot be trusted, and the walk
//   - goes back to the previous key, once in a row ("key fallback"),
//   - or, if there is none (or it vanished too), continues from the key the
//     kernel gave, which may be the map's first one ("dump interrupt", the
//     restart cilium_datapath_conntrack_dump_resets_total counts).
// After a key fallback the previous entry is looked up again but not visited
// again; after an interrupt entries before the restart point can be visited a
// second time, so the visitor must tolerate that (the GC's delete does). The
// walk is bounded (4 x max_entries lookups) so a map that keeps changing
// cannot keep it going forever.
//
// Ops is anything with (all returning 0 or -errno, like libbpf):
//   int getNextKey(const K* prev /*nullptr: first*/, K* next);   -ENOENT: no more keys
//   int lookup(const K& key, V* value);                          -ENOENT: not there
// The visitor gets (const K&, const V&) and the entry it was called for.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>

namespace membrane::kernel {

struct MapWalkStats {
  uint64_t visited = 0;        // visitor calls
  uint64_t key_fallbacks = 0;  // went back to the previous key
  uint64_t interrupts = 0;     // continued from a key the kernel gave for a vanished one
  bool completed = false;      // reached the end (false: an error or the lookup bound)
};

// Returns 0 when the walk ended normally, else the first unexpected -errno
// (stats.completed stays false). `onFallback(const K& vanished)` is called for
// every key fallback, with the key that vanished (callers attribute it, e.g. by
// protocol).
template <typename K, typename V, typename Ops, typename Visit, typename OnFallback>
int walkMap(Ops& ops, size_t max_entries, MapWalkStats& stats, Visit&& visit, OnFallback&& on_fallback) {
  K current{};
  int r = ops.getNextKey(nullptr, &current);
  if (r == -ENOENT) {
    stats.completed = true;
    return 0;
  }
  if (r) return r;
  K prev{};
  bool prev_valid = false;
  bool revisiting = false;  // `current` is the previous key again, already visited
  const uint64_t bound = 4 * static_cast<uint64_t>(max_entries == 0 ? 1 : max_entries);
  for (uint64_t lookups = 0; lookups < bound; ++lookups) {
    K next{};
    const int next_r = ops.getNextKey(&current, &next);
    if (next_r && next_r != -ENOENT) return next_r;
    V value{};
    const int lr = ops.lookup(current, &value);
    if (lr == -ENOENT) {
      // `current` vanished between the two calls: `next` may be the map's first key.
      if (prev_valid) {
        on_fallback(static_cast<const K&>(current));
        current = prev;
        prev_valid = false;  // once in a row: prev may vanish too
        revisiting = true;
        ++stats.key_fallbacks;
      } else {
        ++stats.interrupts;
        if (next_r == -ENOENT) {
          // The vanished key was the last one, and nothing before it to go back to.
          stats.completed = true;
          return 0;
        }
        current = next;
        revisiting = false;
      }
      continue;
    }
    if (lr) return lr;
    if (!revisiting) {
      ++stats.visited;
      visit(static_cast<const K&>(current), static_cast<const V&>(value));
    }
    revisiting = false;
    if (next_r == -ENOENT) {
      stats.completed = true;
      return 0;
    }
    prev = current;
    prev_valid = true;
    current = next;
  }
  return -E2BIG;
}

}  // namespace membrane::kernel

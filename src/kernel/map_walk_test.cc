#include "src/kernel/map_walk.h"

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <vector>

namespace membrane::kernel {
namespace {

// A BPF hash map as the kernel answers: GET_NEXT_KEY of a key that is not in
// the map returns the first key. `before_lookup` runs before each lookup, to
// delete entries the way a concurrent writer would.
struct FakeHashMap {
  std::map<int, int> entries;
  std::function<void(int key)> before_lookup = [](int) {};

  int getNextKey(const int* prev, int* next) {
    if (entries.empty()) return -ENOENT;
    if (prev == nullptr || !entries.count(*prev)) {
      *next = entries.begin()->first;
      return 0;
    }
    auto it = entries.upper_bound(*prev);
    if (it == entries.end()) return -ENOENT;
    *next = it->first;
    return 0;
  }
  int lookup(const int& key, int* value) {
    before_lookup(key);
    auto it = entries.find(key);
    if (it == entries.end()) return -ENOENT;
    *value = it->second;
    return 0;
  }
};

std::vector<int> walk(FakeHashMap& m, MapWalkStats& stats, std::vector<int>* fallbacks = nullptr, int* rc = nullptr) {
  std::vector<int> seen;
  int r = walkMap<int, int>(
      m, 100, stats, [&](const int& k, const int&) { seen.push_back(k); },
      [&](const int& vanished) {
        if (fallbacks) fallbacks->push_back(vanished);
      });
  if (rc) *rc = r;
  return seen;
}

TEST(MapWalk, QuietMapVisitsEveryEntryOnce) {
  FakeHashMap m{{{1, 10}, {2, 20}, {3, 30}}};
  MapWalkStats s;
  int rc = -1;
  EXPECT_EQ(walk(m, s, nullptr, &rc), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(rc, 0);
  EXPECT_TRUE(s.completed);
  EXPECT_EQ(s.visited, 3u);
  EXPECT_EQ(s.key_fallbacks, 0u);
  EXPECT_EQ(s.interrupts, 0u);
}

TEST(MapWalk, EmptyMapCompletes) {
  FakeHashMap m;
  MapWalkStats s;
  EXPECT_TRUE(walk(m, s).empty());
  EXPECT_TRUE(s.completed);
  EXPECT_EQ(s.visited, 0u);
}

// Entry 3 vanishes after the walk got its next key (4) from it: without the
// check the walk would go on from 4, which is right here; but the kernel may
// as well have answered with the first key. The walk goes back to 2 (visited,
// not again) and continues 2 -> 4.
TEST(MapWalk, VanishedCurrentKeyFallsBackToThePreviousOne) {
  FakeHashMap m{{{1, 10}, {2, 20}, {3, 30}, {4, 40}, {5, 50}}};
  m.before_lookup = [&](int key) {
    if (key == 3) m.entries.erase(3);
  };
  MapWalkStats s;
  std::vector<int> fallbacks;
  EXPECT_EQ(walk(m, s, &fallbacks), (std::vector<int>{1, 2, 4, 5}));
  EXPECT_TRUE(s.completed);
  EXPECT_EQ(s.key_fallbacks, 1u);
  EXPECT_EQ(fallbacks, (std::vector<int>{3}));
  EXPECT_EQ(s.interrupts, 0u);
  EXPECT_EQ(s.visited, 4u);
}

// The first key vanishes: no previous key to go back to, so the walk goes on
// from what the kernel answered for the vanished key -- the map's first key
// (2): one dump interrupt.
TEST(MapWalk, VanishedFirstKeyIsADumpInterrupt) {
  FakeHashMap m{{{1, 10}, {2, 20}, {3, 30}}};
  bool done = false;
  m.before_lookup = [&](int key) {
    if (key == 1 && !done) {
      m.entries.erase(1);
      done = true;
    }
  };
  MapWalkStats s;
  EXPECT_EQ(walk(m, s), (std::vector<int>{2, 3}));
  EXPECT_TRUE(s.completed);
  EXPECT_EQ(s.interrupts, 1u);
  EXPECT_EQ(s.key_fallbacks, 0u);
}

// Current and previous vanish together: one fallback (to 2, gone too), then an
// interrupt restarts from the map's first key; 1 is visited a second time.
TEST(MapWalk, PreviousKeyGoneTooRestartsTheWalk) {
  FakeHashMap m{{{1, 10}, {2, 20}, {3, 30}, {4, 40}}};
  m.before_lookup = [&](int key) {
    if (key == 3) {
      m.entries.erase(2);
      m.entries.erase(3);
    }
  };
  MapWalkStats s;
  std::vector<int> fallbacks;
  EXPECT_EQ(walk(m, s, &fallbacks), (std::vector<int>{1, 2, 1, 4}));
  EXPECT_TRUE(s.completed);
  EXPECT_EQ(s.key_fallbacks, 1u);
  EXPECT_EQ(s.interrupts, 1u);
  EXPECT_EQ(fallbacks, (std::vector<int>{3}));
}

TEST(MapWalk, LookupErrorStopsTheWalkUncompleted) {
  struct Failing : FakeHashMap {
    int lookup(const int& key, int* value) { return key == 2 ? -EPERM : FakeHashMap::lookup(key, value); }
  } m;
  m.entries = {{1, 10}, {2, 20}, {3, 30}};
  MapWalkStats s;
  std::vector<int> seen;
  int rc = walkMap<int, int>(m, 100, s, [&](const int& k, const int&) { seen.push_back(k); }, [](const int&) {});
  EXPECT_EQ(rc, -EPERM);
  EXPECT_FALSE(s.completed);
  EXPECT_EQ(seen, (std::vector<int>{1}));
}

}  // namespace
}  // namespace membrane::kernel

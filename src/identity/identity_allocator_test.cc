#include "membrane/identity.h"

#include <gtest/gtest.h>

namespace membrane::identity {
namespace {

using labels::LabelSet;

LabelSet ls(std::string_view s) { return labels::parseLabels(s).value(); }

TEST(IdentityAllocator, EqualSetsShareOneRefcountedNumber) {
  IdentityAllocator a;
  auto x = a.allocate(ls("org=empire"));
  auto y = a.allocate(ls("org=alliance"));
  auto x2 = a.allocate(ls("org=empire"));
  ASSERT_TRUE(x.ok() && y.ok() && x2.ok());
  EXPECT_EQ(x->id, 256u);
  EXPECT_EQ(y->id, 257u);
  EXPECT_EQ(x2->id, 256u);
  EXPECT_EQ(x2->refs, 2u);
  EXPECT_TRUE(a.release(256));
  EXPECT_EQ(a.lookup(256)->refs, 1u);
  EXPECT_TRUE(a.release(256));
  EXPECT_EQ(a.lookup(256), std::nullopt);
  EXPECT_EQ(a.lookup(ls("org=empire")), std::nullopt);
  EXPECT_FALSE(a.release(256));
  EXPECT_FALSE(a.release(1));  // reserved
  // The lowest free number is reused.
  auto z = a.allocate(ls("org=sith"));
  EXPECT_EQ(z->id, 256u);
  auto w = a.allocate(ls("org=jedi"));
  EXPECT_EQ(w->id, 258u);
}

TEST(IdentityAllocator, ReservedIdentities) {
  IdentityAllocator a;
  auto list = a.list();
  ASSERT_EQ(list.size(), 7u);
  const char* names[] = {"reserved:host", "reserved:world", "reserved:unmanaged", "reserved:health",
                         "reserved:init", "reserved:remote-node", "reserved:kube-apiserver"};
  for (uint32_t i = 0; i < 7; ++i) {
    EXPECT_EQ(list[i].id, i + 1);
    EXPECT_TRUE(list[i].reserved);
    EXPECT_EQ(list[i].labels.toString(), names[i]);
  }
  auto host = a.allocate(labels::reservedLabels(labels::Reserved::Host));
  ASSERT_TRUE(host.ok());
  EXPECT_EQ(host->id, 1u);
  EXPECT_TRUE(host->reserved);
  EXPECT_EQ(a.lookup(ls("reserved:health"))->id, 4u);
  EXPECT_EQ(a.refs().size(), 7u);
  EXPECT_FALSE(a.allocate(LabelSet()).ok());
}

TEST(IdentityAllocator, Exhaustion) {
  IdentityAllocator a(256, 258);
  EXPECT_EQ(a.allocate(ls("a=1"))->id, 256u);
  EXPECT_EQ(a.allocate(ls("a=2"))->id, 257u);
  EXPECT_EQ(a.allocate(ls("a=3"))->id, 258u);
  auto r = a.allocate(ls("a=4"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOSPC);
  EXPECT_EQ(r.error().message, "allocate identity for k8s:a=4: all identities 256-258 are in use");
  // An existing set still resolves when the range is full.
  EXPECT_EQ(a.allocate(ls("a=2"))->id, 257u);
  EXPECT_TRUE(a.release(257));
  EXPECT_TRUE(a.release(257));
  EXPECT_EQ(a.allocate(ls("a=4"))->id, 257u);
}

TEST(IdentityAllocator, Restore) {
  IdentityAllocator a;
  ASSERT_TRUE(a.restore(300, ls("org=empire")).ok());
  ASSERT_TRUE(a.restore(300, ls("org=empire")).ok());  // second endpoint
  EXPECT_EQ(a.lookup(300)->refs, 2u);
  // New allocations skip restored numbers only where they collide.
  EXPECT_EQ(a.allocate(ls("org=alliance"))->id, 256u);
  EXPECT_EQ(a.allocate(ls("org=empire"))->id, 300u);
  EXPECT_EQ(a.lookup(300)->refs, 3u);

  auto clash = a.restore(300, ls("org=sith"));
  ASSERT_FALSE(clash.ok());
  EXPECT_EQ(clash.error().code, EEXIST);
  EXPECT_EQ(clash.error().message, "restore identity 300 for k8s:org=sith: already used by k8s:org=empire");
  auto moved = a.restore(301, ls("org=empire"));
  ASSERT_FALSE(moved.ok());
  EXPECT_EQ(moved.error().message,
            "restore identity 301 for k8s:org=empire: these labels already have identity 300");
  auto range = a.restore(5, ls("org=x"));
  ASSERT_FALSE(range.ok());
  EXPECT_EQ(range.error().code, EINVAL);
  auto refs = a.refs();
  ASSERT_EQ(refs.size(), 9u);
  EXPECT_EQ(refs[7].id, 256u);
  EXPECT_EQ(refs[8].id, 300u);
  EXPECT_EQ(refs[8].labels->toString(), "k8s:org=empire");
}

}  // namespace
}  // namespace membrane::identity

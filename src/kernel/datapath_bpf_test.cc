// BPF_PROG_TEST_RUN tests of bpf/datapath.bpf.c through the real loader and
// map writers (Datapath). Needs root; skipped otherwise.
//
// Every test gets its own pin root (unique per pid and test), removed in
// TearDown and by a guard destructor if SetUp fails half-way. If /sys/fs/bpf
// is not a bpffs, a private bpffs is mounted under /tmp for the test and
// unmounted afterwards.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <linux/pkt_cls.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <fstream>

#include "membrane/result.h"
#include "membrane/unique_fd.h"

#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "src/kernel/datapath.h"
#include "src/kernel/packet_builder.h"

namespace membrane::kernel {
namespace {

constexpr uint32_t kSrcIfindex = 1;  // lo: the only ifindex test_run accepts without a device
constexpr uint32_t kSrcEp = 100;
constexpr uint32_t kSrcId = 1000;
constexpr const char* kSrcIp = "10.200.0.7";
constexpr uint32_t kDstIfindex = 4242;  // redirect target; test_run does not resolve it
constexpr uint32_t kDstEp = 200;
constexpr uint32_t kDstId = 2000;
constexpr const char* kDstIp = "10.200.0.5";
constexpr uint32_t kRemoteId = 3000;  // 192.0.2.0/24 in the ipcache
constexpr const char* kRemoteIp = "192.0.2.10";
constexpr const char* kWorldIp = "198.51.100.1";  // not in the ipcache

const MacAddr kDstMac{0x02, 0xbb, 0, 0, 0, 0x05};
const MacAddr kDstNodeMac{0x02, 0xcc, 0, 0, 0, 0x05};

// Owns the kernel-side test state: pin dir (and a private bpffs mount).
struct PinRootGuard {
  std::string mount_dir;  // non-empty if we mounted a bpffs
  std::string root;
  ~PinRootGuard() {
    if (!root.empty()) {
      auto st = Datapath::removePins(root);
      if (!st.ok()) ADD_FAILURE() << st.error().message;
    }
    if (!mount_dir.empty()) {
      umount2(mount_dir.c_str(), MNT_DETACH);
      rmdir(mount_dir.c_str());
    }
  }
};

bool isBpffs(const char* path) {
  struct statfs st {};
  return statfs(path, &st) == 0 && static_cast<unsigned long>(st.f_type) == BPF_FS_MAGIC;
}

struct RunResult {
  int retval = -1;
  std::vector<uint8_t> data;
  uint32_t mark = 0;  // skb->mark after the program
};

class DatapathBpfTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (BPF_PROG_LOAD, BPF_PROG_TEST_RUN)";
    static int counter = 0;
    const std::string name = "membrane-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    guard_ = std::make_unique<PinRootGuard>();
    std::string base = "/sys/fs/bpf";
    if (!isBpffs(base.c_str())) {
      guard_->mount_dir = "/tmp/" + name + "-bpffs";
      ASSERT_EQ(mkdir(guard_->mount_dir.c_str(), 0700), 0) << membrane::errnoText(errno);
      if (mount("bpf", guard_->mount_dir.c_str(), "bpf", 0, nullptr) != 0) {
        int e = errno;
        rmdir(guard_->mount_dir.c_str());
        guard_->mount_dir.clear();
        FAIL() << "mount private bpffs: " << membrane::errnoText(e);
      }
      base = guard_->mount_dir;
    }
    guard_->root = base + "/" + name;
    auto dp = Datapath::open(DatapathOptions{guard_->root});
    ASSERT_TRUE(dp.ok()) << dp.error().message;
    dp_ = std::move(*dp);

    mb_endpoint_info src{};
    src.ep_id = kSrcEp;
    src.identity = kSrcId;
    src.ifindex = kSrcIfindex;
    src.ipv4 = ipv4Be(kSrcIp);
    ASSERT_TRUE(dp_->upsertEndpoint(src).ok());
    src_ = src;
    mb_endpoint_info dst{};
    dst.ep_id = kDstEp;
    dst.identity = kDstId;
    dst.ifindex = kDstIfindex;
    dst.ipv4 = ipv4Be(kDstIp);
    std::memcpy(dst.mac, kDstMac.data(), 6);
    std::memcpy(dst.node_mac, kDstNodeMac.data(), 6);
    ASSERT_TRUE(dp_->upsertEndpoint(dst).ok());
    dst_ = dst;
    ASSERT_TRUE(dp_->upsertIpcache(ipv4Be("192.0.2.0"), 24, kRemoteId).ok());

    auto reader = EventReader::open(dp_->eventsFd(), [this](const mb_event& e) { events_.push_back(e); });
    ASSERT_TRUE(reader.ok()) << reader.error().message;
    reader_.emplace(std::move(*reader));
  }

  void TearDown() override {
    reader_.reset();
    dp_.reset();    // closes map/prog fds before the pins go
    guard_.reset();
  }

  void setSrcFlags(uint32_t flags) {
    src_.flags = flags;
    ASSERT_TRUE(dp_->upsertEndpoint(src_).ok());
  }
  void setDstFlags(uint32_t flags) {
    dst_.flags = flags;
    ASSERT_TRUE(dp_->upsertEndpoint(dst_).ok());
  }
  void setPolicy(uint32_t ep_id, const std::map<PolicyMapKey, PolicyMapValue>& entries) {
    auto r = dp_->syncPolicy(ep_id, entries);
    ASSERT_TRUE(r.ok()) << r.error().message;
  }

  RunResult run(Program prog, const std::vector<uint8_t>& pkt, uint32_t mark = 0) {
    RunResult res;
    res.data.resize(pkt.size() + 256);
    __sk_buff ctx{};
    ctx.ifindex = kSrcIfindex;
    ctx.mark = mark;
    bpf_test_run_opts opts{};
    opts.sz = sizeof(opts);
    opts.data_in = pkt.data();
    opts.data_size_in = static_cast<uint32_t>(pkt.size());
    opts.data_out = res.data.data();
    opts.data_size_out = static_cast<uint32_t>(res.data.size());
    opts.ctx_in = &ctx;
    opts.ctx_size_in = sizeof(ctx);
    __sk_buff ctx_out{};
    opts.ctx_out = &ctx_out;
    opts.ctx_size_out = sizeof(ctx_out);
    int r = bpf_prog_test_run_opts(dp_->programFd(prog), &opts);
    EXPECT_EQ(r, 0) << "bpf_prog_test_run_opts: " << membrane::errnoText(-r);
    res.retval = static_cast<int>(opts.retval);
    res.data.resize(opts.data_size_out);
    res.mark = ctx_out.mark;
    return res;
  }
  int fromEp(const std::vector<uint8_t>& pkt) { return run(Program::FromEndpoint, pkt).retval; }
  int toEp(const std::vector<uint8_t>& pkt, uint32_t mark = 0) {
    return run(Program::ToEndpoint, pkt, mark).retval;
  }

  // {packets, bytes} of one metrics key; {0,0} if absent.
  std::pair<uint64_t, uint64_t> metric(uint8_t reason, uint8_t dir) {
    auto m = dp_->readMetrics();
    EXPECT_TRUE(m.ok());
    if (!m.ok()) return {0, 0};
    for (const auto& e : *m) {
      if (e.reason == reason && e.direction == dir) return {e.packets, e.bytes};
    }
    return {0, 0};
  }

  std::vector<mb_event> drainEvents() {
    events_.clear();
    auto r = reader_->consume();
    EXPECT_TRUE(r.ok());
    return events_;
  }

  std::unique_ptr<PinRootGuard> guard_;
  std::unique_ptr<Datapath> dp_;
  std::optional<EventReader> reader_;
  std::vector<mb_event> events_;
  mb_endpoint_info src_{};
  mb_endpoint_info dst_{};
};

PolicyMapKey egress(uint32_t id, uint16_t port, uint8_t proto) {
  return PolicyMapKey{id, port, proto, MB_DIR_EGRESS};
}
PolicyMapKey ingress(uint32_t id, uint16_t port, uint8_t proto) {
  return PolicyMapKey{id, port, proto, MB_DIR_INGRESS};
}
PolicyMapValue allow(uint32_t cookie = 0) { return PolicyMapValue{false, 0, cookie}; }
PolicyMapValue deny(uint32_t cookie = 0) { return PolicyMapValue{true, 0, cookie}; }

std::vector<uint8_t> tcpTo(const char* dst, uint16_t sport, uint16_t dport, uint8_t flags = kTcpSyn,
                           size_t payload = 0) {
  return PacketBuilder().ipv4(kSrcIp, dst).tcp(sport, dport, flags).payload(payload).build();
}

TEST_F(DatapathBpfTest, EachLookupTierAllows) {
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED);
  struct Tier {
    PolicyMapKey key;
    uint8_t match;
  } tiers[] = {
      {egress(kRemoteId, 80, IPPROTO_TCP), MB_MATCH_L3_L4},
      {egress(0, 80, IPPROTO_TCP), MB_MATCH_L4_ONLY},
      {egress(kRemoteId, 0, 0), MB_MATCH_L3_ONLY},
      {egress(0, 0, 0), MB_MATCH_ALL},
  };
  uint16_t sport = 40000;
  for (const auto& t : tiers) {
    SCOPED_TRACE(static_cast<int>(t.match));
    setPolicy(kSrcEp, {{t.key, allow(t.match * 10)}});
    auto pkt = tcpTo(kRemoteIp, sport++, 80);
    drainEvents();
    EXPECT_EQ(fromEp(pkt), TC_ACT_OK);
    auto stats = dp_->dumpPolicy(kSrcEp);
    ASSERT_TRUE(stats.ok());
    ASSERT_EQ(stats->size(), 1u);
    EXPECT_EQ((*stats)[0].packets, 1u);
    EXPECT_EQ((*stats)[0].bytes, pkt.size());
    auto ev = drainEvents();
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].type, MB_EVENT_POLICY_VERDICT);
    EXPECT_EQ(ev[0].subtype, MB_VERDICT_FORWARDED);
    EXPECT_EQ(ev[0].match_type, t.match);
    EXPECT_EQ(ev[0].cookie, t.match * 10u);
    EXPECT_EQ(ev[0].direction, MB_DIR_EGRESS);
  }
  EXPECT_EQ(metric(0, MB_DIR_EGRESS).first, 4u);
}

TEST_F(DatapathBpfTest, EgressMissDropsAndCountsExactly) {
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED);
  setPolicy(kSrcEp, {{egress(kRemoteId, 443, IPPROTO_TCP), allow()}});
  auto pkt = tcpTo(kRemoteIp, 40000, 80, kTcpSyn, 11);
  EXPECT_EQ(fromEp(pkt), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_EGRESS), std::make_pair(uint64_t{1}, uint64_t{pkt.size()}));
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_INGRESS), std::make_pair(uint64_t{0}, uint64_t{0}));
  EXPECT_EQ(metric(0, MB_DIR_EGRESS), std::make_pair(uint64_t{0}, uint64_t{0}));
  auto ct = dp_->listCt();
  ASSERT_TRUE(ct.ok());
  EXPECT_TRUE(ct->empty()) << "a dropped NEW flow must not create conntrack state";
}

TEST_F(DatapathBpfTest, IngressMissOfLocalDestinationDrops) {
  setDstFlags(MB_EP_F_INGRESS_ENFORCED);
  setPolicy(kDstEp, {{ingress(kSrcId, 443, IPPROTO_TCP), allow()}});
  auto pkt = tcpTo(kDstIp, 40000, 80);
  EXPECT_EQ(fromEp(pkt), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_INGRESS), std::make_pair(uint64_t{1}, uint64_t{pkt.size()}));
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_EGRESS).first, 0u);
}

TEST_F(DatapathBpfTest, DenyEntryAtTierOneBeatsAllowAll) {
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED);
  setPolicy(kSrcEp, {{egress(kRemoteId, 80, IPPROTO_TCP), deny(5)}, {egress(0, 0, 0), allow()}});
  auto pkt = tcpTo(kRemoteIp, 40000, 80);
  EXPECT_EQ(fromEp(pkt), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_POLICY_DENY, MB_DIR_EGRESS), std::make_pair(uint64_t{1}, uint64_t{pkt.size()}));
  // Another port falls through to the allow-all entry.
  EXPECT_EQ(fromEp(tcpTo(kRemoteIp, 40001, 81)), TC_ACT_OK);
  auto ev = drainEvents();
  ASSERT_GE(ev.size(), 2u);
  EXPECT_EQ(ev[0].type, MB_EVENT_POLICY_VERDICT);
  EXPECT_EQ(ev[0].subtype, MB_VERDICT_DROPPED);
  EXPECT_EQ(ev[0].match_type, MB_MATCH_L3_L4);
  EXPECT_EQ(ev[0].cookie, 5u);
  EXPECT_EQ(ev[1].type, MB_EVENT_DROP);
  EXPECT_EQ(ev[1].subtype, MB_DROP_POLICY_DENY);
}

TEST_F(DatapathBpfTest, ReplyBypassesPolicy) {
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED | MB_EP_F_INGRESS_ENFORCED);
  setPolicy(kSrcEp, {{egress(kRemoteId, 80, IPPROTO_TCP), allow()}});
  ASSERT_EQ(fromEp(tcpTo(kRemoteIp, 40000, 80)), TC_ACT_OK);

  auto ct = dp_->listCt();
  ASSERT_TRUE(ct.ok());
  ASSERT_EQ(ct->size(), 1u);
  const auto& flow = (*ct)[0];
  EXPECT_EQ(flow.key.saddr, ipv4Be(kSrcIp));
  EXPECT_EQ(flow.key.daddr, ipv4Be(kRemoteIp));
  EXPECT_EQ(ntohs(flow.key.sport), 40000);
  EXPECT_EQ(ntohs(flow.key.dport), 80);
  EXPECT_EQ(flow.entry.src_identity, kSrcId);
  EXPECT_EQ(flow.entry.dst_identity, kRemoteId);
  EXPECT_EQ(flow.entry.ep_id, kSrcEp);
  EXPECT_EQ(flow.entry.tx_packets, 1u);

  setPolicy(kSrcEp, {});
  mb_datapath_config cfg{};
  cfg.flags = MB_CFG_F_TRACE_EVENTS;
  ASSERT_TRUE(dp_->setConfig(cfg).ok());
  drainEvents();
  auto reply = PacketBuilder().ipv4(kRemoteIp, kSrcIp).tcp(80, 40000, kTcpSyn | kTcpAck).build();
  EXPECT_EQ(toEp(reply), TC_ACT_OK);
  auto ev = drainEvents();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, MB_EVENT_TRACE);
  EXPECT_EQ(ev[0].ct_state, 2);  // reply
  EXPECT_EQ(ev[0].src_identity, kRemoteId);
  EXPECT_EQ(ev[0].dst_identity, kSrcId);
  cfg.flags = 0;
  ASSERT_TRUE(dp_->setConfig(cfg).ok());
  EXPECT_EQ(fromEp(tcpTo(kRemoteIp, 40001, 80)), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_EGRESS).first, 1u);
  EXPECT_EQ(metric(0, MB_DIR_INGRESS).first, 1u);

  ct = dp_->listCt();
  ASSERT_TRUE(ct.ok());
  ASSERT_EQ(ct->size(), 1u);
  EXPECT_EQ((*ct)[0].entry.rx_packets, 1u);
  EXPECT_EQ((*ct)[0].entry.rx_bytes, reply.size());
  EXPECT_EQ((*ct)[0].entry.rx_flags_seen, kTcpSyn | kTcpAck);
}

TEST_F(DatapathBpfTest, IcmpEchoReplyMatchesRequest) {
  // {0, ICMP, 0} is a proto-wildcard entry: looked up with the flag only.
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED | MB_EP_F_INGRESS_ENFORCED | MB_EP_F_PROTO_WILDCARD);
  setPolicy(kSrcEp, {{egress(0, 0, IPPROTO_ICMP), allow()}});
  auto req = PacketBuilder().ipv4(kSrcIp, kWorldIp).icmpEcho(8, 77, 1).build();
  EXPECT_EQ(fromEp(req), TC_ACT_OK);
  auto rep = PacketBuilder().ipv4(kWorldIp, kSrcIp).icmpEcho(0, 77, 1).build();
  EXPECT_EQ(toEp(rep), TC_ACT_OK);
  auto other = PacketBuilder().ipv4(kWorldIp, kSrcIp).icmpEcho(0, 78, 1).build();
  EXPECT_EQ(toEp(other), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_INGRESS).first, 1u);
}

TEST_F(DatapathBpfTest, AntiSpoofing) {
  auto pkt = PacketBuilder().ipv4("10.200.0.99", kRemoteIp).udp(5000, 53).payload(3).build();
  EXPECT_EQ(fromEp(pkt), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_INVALID_SIP, MB_DIR_EGRESS), std::make_pair(uint64_t{1}, uint64_t{pkt.size()}));
  auto ev = drainEvents();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, MB_EVENT_DROP);
  EXPECT_EQ(ev[0].subtype, MB_DROP_INVALID_SIP);
}

TEST_F(DatapathBpfTest, PolicyEntryCountersSumAndSurviveChanges) {
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED);
  setPolicy(kSrcEp, {{egress(kRemoteId, 80, IPPROTO_TCP), allow(1)}, {egress(0, 53, IPPROTO_UDP), allow(2)}});
  uint64_t bytes = 0;
  for (size_t i = 0; i < 3; ++i) {
    auto pkt = tcpTo(kRemoteIp, 40000, 80, i == 0 ? kTcpSyn : kTcpAck, i * 100);
    bytes += pkt.size();
    ASSERT_EQ(fromEp(pkt), TC_ACT_OK);
  }
  // Cookie change: the entry is rewritten in place, counters kept.
  auto sync = dp_->syncPolicy(kSrcEp, {{egress(kRemoteId, 80, IPPROTO_TCP), allow(9)},
                                       {egress(0, 53, IPPROTO_UDP), allow(2)}});
  ASSERT_TRUE(sync.ok());
  EXPECT_EQ(sync->updated, 1u);
  EXPECT_EQ(sync->unchanged, 1u);
  EXPECT_EQ(sync->added + sync->deleted, 0u);

  auto stats = dp_->dumpPolicy(kSrcEp);
  ASSERT_TRUE(stats.ok());
  ASSERT_EQ(stats->size(), 2u);
  // Sorted by key: identity 0 (UDP/53) first.
  EXPECT_EQ((*stats)[0].key, egress(0, 53, IPPROTO_UDP));
  EXPECT_EQ((*stats)[0].packets, 0u);
  EXPECT_EQ((*stats)[1].key, egress(kRemoteId, 80, IPPROTO_TCP));
  EXPECT_EQ((*stats)[1].value.cookie, 9u);
  EXPECT_EQ((*stats)[1].packets, 3u);
  EXPECT_EQ((*stats)[1].bytes, bytes);

  auto ct = dp_->listCt();
  ASSERT_TRUE(ct.ok());
  ASSERT_EQ(ct->size(), 1u);
  EXPECT_EQ((*ct)[0].entry.tx_packets, 3u);
  EXPECT_EQ((*ct)[0].entry.tx_bytes, bytes);
  EXPECT_TRUE((*ct)[0].entry.flags & MB_CT_F_SEEN_NON_SYN);
}

// Syscalls on the policy map of one (operation, outcome), from mapOps().
uint64_t policyOps(const Datapath& dp, const std::string& op, const std::string& outcome = "success") {
  for (const auto& o : dp.mapOps())
    if (o.map_name == MB_MAP_POLICY && o.operation == op && o.outcome == outcome) return o.count;
  return 0;
}

TEST_F(DatapathBpfTest, IncrementalSyncTouchesOnlyChangedKeys) {
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED);
  const auto a = egress(kRemoteId, 80, IPPROTO_TCP), b = egress(0, 53, IPPROTO_UDP),
             c = egress(kRemoteId, 443, IPPROTO_TCP), d = egress(kRemoteId, 8080, IPPROTO_TCP);
  setPolicy(kSrcEp, {{a, allow(1)}, {b, allow(2)}, {c, allow(3)}});
  // Another endpoint's entries must not be read or written by kSrcEp's syncs.
  setPolicy(kDstEp, {{ingress(kSrcId, 80, IPPROTO_TCP), allow(4)}});
  uint64_t bytes = 0;
  for (size_t i = 0; i < 2; ++i) {
    auto pkt = tcpTo(kRemoteIp, 40001, 80, i == 0 ? kTcpSyn : kTcpAck, 10);
    bytes += pkt.size();
    ASSERT_EQ(fromEp(pkt), TC_ACT_OK);
  }
  const uint64_t upd0 = policyOps(*dp_, "update"), del0 = policyOps(*dp_, "delete"),
                 look0 = policyOps(*dp_, "lookup"), next0 = policyOps(*dp_, "getNextKey");

  // a unchanged, b changed (cookie), c removed, d added.
  auto sync = dp_->syncPolicy(kSrcEp, {{a, allow(1)}, {b, allow(7)}, {d, deny(5)}});
  ASSERT_TRUE(sync.ok()) << sync.error().message;
  EXPECT_EQ(sync->unchanged, 1u);
  EXPECT_EQ(sync->updated, 1u);
  EXPECT_EQ(sync->added, 1u);
  EXPECT_EQ(sync->deleted, 1u);
  EXPECT_EQ(policyOps(*dp_, "update") - upd0, 2u);  // b (in place) and d
  EXPECT_EQ(policyOps(*dp_, "delete") - del0, 1u);  // c
  EXPECT_EQ(policyOps(*dp_, "lookup") - look0, 1u);  // b's counters, read to keep them
  EXPECT_EQ(policyOps(*dp_, "getNextKey") - next0, 0u);  // no scan of the global map

  // The same desired state again costs no syscall at all.
  const uint64_t upd1 = policyOps(*dp_, "update"), look1 = policyOps(*dp_, "lookup");
  sync = dp_->syncPolicy(kSrcEp, {{a, allow(1)}, {b, allow(7)}, {d, deny(5)}});
  ASSERT_TRUE(sync.ok());
  EXPECT_EQ(sync->unchanged, 3u);
  EXPECT_EQ(policyOps(*dp_, "update"), upd1);
  EXPECT_EQ(policyOps(*dp_, "lookup"), look1);

  // The unchanged entry kept its per-CPU counters.
  auto stats = dp_->dumpPolicy(kSrcEp);
  ASSERT_TRUE(stats.ok());
  ASSERT_EQ(stats->size(), 3u);
  EXPECT_EQ((*stats)[0].key, b);
  EXPECT_EQ((*stats)[0].value.cookie, 7u);
  EXPECT_EQ((*stats)[1].key, a);
  EXPECT_EQ((*stats)[1].packets, 2u);
  EXPECT_EQ((*stats)[1].bytes, bytes);
  EXPECT_EQ((*stats)[2].key, d);
  EXPECT_TRUE((*stats)[2].value.deny);
  auto other = dp_->dumpPolicy(kDstEp);
  ASSERT_TRUE(other.ok());
  ASSERT_EQ(other->size(), 1u);
  EXPECT_EQ((*other)[0].value.cookie, 4u);
}

TEST_F(DatapathBpfTest, ReopenedDatapathDiffsAgainstWhatTheKernelHolds) {
  const auto a = egress(kRemoteId, 80, IPPROTO_TCP), b = egress(0, 53, IPPROTO_UDP);
  setPolicy(kSrcEp, {{a, allow(1)}, {b, allow(2)}});
  setPolicy(kDstEp, {{ingress(kSrcId, 80, IPPROTO_TCP), allow(4)}});
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED);
  auto pkt = tcpTo(kRemoteIp, 40002, 80, kTcpSyn, 0);
  ASSERT_EQ(fromEp(pkt), TC_ACT_OK);

  // A restarted agent: a new Datapath on the same pins rebuilds its shadow
  // with one scan (3 entries + the final ENOENT) ...
  auto reopened = Datapath::open(DatapathOptions{guard_->root});
  ASSERT_TRUE(reopened.ok()) << reopened.error().message;
  Datapath& dp2 = **reopened;
  EXPECT_EQ(policyOps(dp2, "getNextKey"), 4u);
  EXPECT_EQ(policyOps(dp2, "lookup"), 3u);
  EXPECT_EQ(dp2.policyEndpoints(), (std::vector<uint32_t>{kSrcEp, kDstEp}));
  // ... and re-realizing the same policy writes nothing; a changed one
  // writes only the difference and keeps the counters of the rest.
  auto sync = dp2.syncPolicy(kSrcEp, {{a, allow(1)}, {b, allow(2)}});
  ASSERT_TRUE(sync.ok());
  EXPECT_EQ(sync->unchanged, 2u);
  EXPECT_EQ(policyOps(dp2, "update"), 0u);
  sync = dp2.syncPolicy(kSrcEp, {{a, allow(1)}});
  ASSERT_TRUE(sync.ok());
  EXPECT_EQ(sync->deleted, 1u);
  EXPECT_EQ(policyOps(dp2, "delete"), 1u);
  EXPECT_EQ(policyOps(dp2, "update"), 0u);
  auto stats = dp2.dumpPolicy(kSrcEp);
  ASSERT_TRUE(stats.ok());
  ASSERT_EQ(stats->size(), 1u);
  EXPECT_EQ((*stats)[0].packets, 1u);
  ASSERT_TRUE(dp2.deletePolicy(kDstEp).ok());
  EXPECT_EQ(dp2.policyEndpoints(), (std::vector<uint32_t>{kSrcEp}));
}

TEST_F(DatapathBpfTest, DropEventCarriesBothIdentities) {
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED);
  auto pkt = tcpTo(kRemoteIp, 40000, 8080, kTcpSyn, 7);
  drainEvents();
  ASSERT_EQ(fromEp(pkt), TC_ACT_SHOT);
  auto ev = drainEvents();
  ASSERT_EQ(ev.size(), 2u);  // policy verdict + drop
  const mb_event& d = ev[1];
  EXPECT_EQ(d.type, MB_EVENT_DROP);
  EXPECT_EQ(d.subtype, MB_DROP_POLICY);
  EXPECT_EQ(d.direction, MB_DIR_EGRESS);
  EXPECT_EQ(d.ep_id, kSrcEp);
  EXPECT_EQ(d.ifindex, kSrcIfindex);
  EXPECT_EQ(d.src_identity, kSrcId);
  EXPECT_EQ(d.dst_identity, kRemoteId);
  EXPECT_EQ(d.dst_ep_id, 0u);
  EXPECT_EQ(d.saddr, ipv4Be(kSrcIp));
  EXPECT_EQ(d.daddr, ipv4Be(kRemoteIp));
  EXPECT_EQ(ntohs(d.sport), 40000);
  EXPECT_EQ(ntohs(d.dport), 8080);
  EXPECT_EQ(d.proto, IPPROTO_TCP);
  EXPECT_EQ(d.tcp_flags, kTcpSyn);
  EXPECT_EQ(d.ct_state, 0);
  EXPECT_EQ(d.len, pkt.size());
  EXPECT_NE(d.ts_ns, 0u);
  EXPECT_EQ(ev[0].type, MB_EVENT_POLICY_VERDICT);
  EXPECT_EQ(ev[0].subtype, MB_VERDICT_DROPPED);
  EXPECT_EQ(ev[0].match_type, MB_MATCH_NONE);
}

TEST_F(DatapathBpfTest, LocalDeliveryRedirectsWithRewrittenMacs) {
  setDstFlags(MB_EP_F_INGRESS_ENFORCED);
  setPolicy(kDstEp, {{ingress(kSrcId, 80, IPPROTO_TCP), allow()}});
  auto pkt = tcpTo(kDstIp, 40000, 80, kTcpSyn, 20);
  auto res = run(Program::FromEndpoint, pkt);
  EXPECT_EQ(res.retval, TC_ACT_REDIRECT);
  ASSERT_EQ(res.data.size(), pkt.size());
  EXPECT_EQ(std::vector<uint8_t>(res.data.begin(), res.data.begin() + 6),
            std::vector<uint8_t>(kDstMac.begin(), kDstMac.end()));
  EXPECT_EQ(std::vector<uint8_t>(res.data.begin() + 6, res.data.begin() + 12),
            std::vector<uint8_t>(kDstNodeMac.begin(), kDstNodeMac.end()));
  EXPECT_TRUE(std::equal(pkt.begin() + 12, pkt.end(), res.data.begin() + 12)) << "only MACs change";
  EXPECT_EQ(metric(0, MB_DIR_EGRESS), std::make_pair(uint64_t{1}, uint64_t{pkt.size()}));
  EXPECT_EQ(metric(0, MB_DIR_INGRESS), std::make_pair(uint64_t{1}, uint64_t{pkt.size()}));
  auto ev = drainEvents();
  ASSERT_EQ(ev.size(), 1u);  // egress not enforced: only the ingress decision
  EXPECT_EQ(ev[0].direction, MB_DIR_INGRESS);
  EXPECT_EQ(ev[0].dst_ep_id, kDstEp);
}

TEST_F(DatapathBpfTest, ToEndpointTakesIdentityFromMark) {
  setSrcFlags(MB_EP_F_INGRESS_ENFORCED);
  constexpr uint32_t kMarkedId = 4242;
  setPolicy(kSrcEp, {{ingress(kMarkedId, 8080, IPPROTO_TCP), allow()}});
  auto pkt = PacketBuilder().ipv4("10.0.0.1", kSrcIp).tcp(50000, 8080, kTcpSyn).build();
  EXPECT_EQ(toEp(pkt, (kMarkedId << 16) | MB_MARK_MAGIC_IDENTITY), TC_ACT_OK);
  auto ev = drainEvents();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].src_identity, kMarkedId);
  EXPECT_EQ(ev[0].dst_identity, kSrcId);
  // Without the mark the source is world (ipcache miss): dropped.
  auto pkt2 = PacketBuilder().ipv4("10.0.0.1", kSrcIp).tcp(50001, 8080, kTcpSyn).build();
  EXPECT_EQ(toEp(pkt2), TC_ACT_SHOT);
  // A mark with another magic is not an identity.
  auto pkt3 = PacketBuilder().ipv4("10.0.0.1", kSrcIp).tcp(50002, 8080, kTcpSyn).build();
  EXPECT_EQ(toEp(pkt3, (kMarkedId << 16) | MB_MARK_MAGIC_HOST), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_INGRESS).first, 2u);
  EXPECT_EQ(metric(0, MB_DIR_INGRESS).first, 1u);
}

// The proxy's upstream mark carries identities wider than 16 bits: CIDR
// identities (1 << 24 | n) and identities >= 65536. Before mb_mark_identity
// the datapath read only mark >> 16, so 0x01000005 became 5 and 70000 became
// 4464: other identities, and the L7-allowed connection was dropped.
TEST_F(DatapathBpfTest, ToEndpointReadsWideIdentitiesFromTheProxyMark) {
  setSrcFlags(MB_EP_F_INGRESS_ENFORCED);
  constexpr uint32_t kCidrId = 0x01000005, kWideId = 70000;
  setPolicy(kSrcEp, {{ingress(kCidrId, 8080, IPPROTO_TCP), allow()}, {ingress(kWideId, 8080, IPPROTO_TCP), allow()}});
  uint16_t sport = 51000;
  for (uint32_t id : {kCidrId, kWideId}) {
    for (uint32_t magic : {MB_MARK_MAGIC_PROXY_INGRESS, MB_MARK_MAGIC_IDENTITY}) {
      SCOPED_TRACE("identity " + std::to_string(id) + " magic " + std::to_string(magic));
      auto pkt = PacketBuilder().ipv4("10.0.0.1", kSrcIp).tcp(sport++, 8080, kTcpSyn).build();
      EXPECT_EQ(toEp(pkt, mb_mark_encode(magic, id)), TC_ACT_OK);
      auto ev = drainEvents();
      ASSERT_EQ(ev.size(), 1u);
      EXPECT_EQ(ev[0].src_identity, id);
    }
  }
  // The 16-bit readings of those marks are not allowed.
  auto pkt = PacketBuilder().ipv4("10.0.0.1", kSrcIp).tcp(sport++, 8080, kTcpSyn).build();
  EXPECT_EQ(toEp(pkt, mb_mark_encode(MB_MARK_MAGIC_PROXY_INGRESS, kCidrId & 0xFFFF)), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_INGRESS).first, 1u);
}

// With nobody watching policy verdicts (MB_CFG_F_NO_ALLOWED_VERDICTS), an
// allowed new flow emits no event at all; a drop still does, and every
// counter is the same as with events on.
TEST_F(DatapathBpfTest, NoAllowedVerdictsFlagSilencesOnlyAllowedFlows) {
  setSrcFlags(MB_EP_F_INGRESS_ENFORCED);
  setPolicy(kSrcEp, {{ingress(4242, 8080, IPPROTO_TCP), allow()}});
  mb_datapath_config cfg{};
  cfg.flags = MB_CFG_F_NO_ALLOWED_VERDICTS;
  ASSERT_TRUE(dp_->setConfig(cfg).ok());
  auto allowed = PacketBuilder().ipv4("10.0.0.1", kSrcIp).tcp(52000, 8080, kTcpSyn).build();
  EXPECT_EQ(toEp(allowed, mb_mark_encode(MB_MARK_MAGIC_IDENTITY, 4242)), TC_ACT_OK);
  EXPECT_TRUE(drainEvents().empty());
  auto denied = PacketBuilder().ipv4("10.0.0.1", kSrcIp).tcp(52001, 8080, kTcpSyn).build();
  EXPECT_EQ(toEp(denied), TC_ACT_SHOT);
  auto ev = drainEvents();
  ASSERT_EQ(ev.size(), 2u);  // the verdict, then the drop
  EXPECT_EQ(ev[0].type, MB_EVENT_POLICY_VERDICT);
  EXPECT_EQ(ev[0].subtype, MB_VERDICT_DROPPED);
  EXPECT_EQ(ev[1].type, MB_EVENT_DROP);
  EXPECT_EQ(metric(0, MB_DIR_INGRESS).first, 1u);
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_INGRESS).first, 1u);
  // Someone watches again: the next new allowed flow is reported.
  cfg.flags = 0;
  ASSERT_TRUE(dp_->setConfig(cfg).ok());
  auto again = PacketBuilder().ipv4("10.0.0.1", kSrcIp).tcp(52002, 8080, kTcpSyn).build();
  EXPECT_EQ(toEp(again, mb_mark_encode(MB_MARK_MAGIC_IDENTITY, 4242)), TC_ACT_OK);
  ev = drainEvents();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].subtype, MB_VERDICT_FORWARDED);
}

TEST_F(DatapathBpfTest, ParserDrops) {
  auto v6 = PacketBuilder().ethertype(0x86DD).payload(40).build();
  EXPECT_EQ(fromEp(v6), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_UNKNOWN_L3, MB_DIR_EGRESS).first, 1u);
  auto arp = PacketBuilder().ethertype(0x0806).payload(28).build();
  EXPECT_EQ(fromEp(arp), TC_ACT_OK);
  auto frag = PacketBuilder().ipv4(kSrcIp, kRemoteIp).udp(1, 2).fragment(0x2000).build();
  EXPECT_EQ(fromEp(frag), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_FRAG_NOSUPPORT, MB_DIR_EGRESS).first, 1u);
  auto truncated = tcpTo(kRemoteIp, 1, 2);
  truncated.resize(14 + 20 + 4);  // TCP header cut, IP tot_len now lies
  EXPECT_EQ(fromEp(truncated), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_INVALID, MB_DIR_EGRESS).first, 1u);
}

// cilium_bpf_{maps,progs}_virtual_memory_max_bytes: system-wide memlock.
// The exact system total moves with other users of BPF, so the test pins what
// it can: this datapath's own maps and programs are part of the sum, and a
// map created now raises it by that map's memlock.
TEST_F(DatapathBpfTest, SystemBpfMemoryCountsEveryMapAndProgram) {
  auto before = systemBpfMemory();
  ASSERT_TRUE(before.ok()) << before.error().message;
  EXPECT_GT(before->progs_bytes, 0u);  // from_endpoint and to_endpoint at least
  UniqueFd extra(bpf_map_create(BPF_MAP_TYPE_ARRAY, "mb_memtest", 4, 4096, 64, nullptr));
  ASSERT_TRUE(extra.valid()) << membrane::errnoText(errno);
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fdinfo/%d", extra.get());
  std::ifstream fdinfo(path);
  std::string line;
  uint64_t memlock = 0;
  while (std::getline(fdinfo, line))
    if (line.rfind("memlock:", 0) == 0) memlock = std::stoull(line.substr(8));
  ASSERT_GT(memlock, 4096u * 64u);  // 64 values of 4 KiB, rounded up by the kernel
  auto after = systemBpfMemory();
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_GE(after->maps_bytes, before->maps_bytes + memlock);  // ctest runs root tests one at a time
  extra.reset();
}

TEST_F(DatapathBpfTest, UnknownEndpointFailsClosed) {
  ASSERT_TRUE(dp_->deleteEndpoint(kSrcIfindex, ipv4Be(kSrcIp)).ok());
  EXPECT_EQ(fromEp(tcpTo(kRemoteIp, 1, 2)), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_EP_NOT_READY, MB_DIR_EGRESS).first, 1u);
  EXPECT_EQ(toEp(tcpTo(kRemoteIp, 1, 2)), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_EP_NOT_READY, MB_DIR_INGRESS).first, 1u);
}

TEST_F(DatapathBpfTest, AuditForwardsAndConfigModes) {
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED | MB_EP_F_EGRESS_AUDIT);
  drainEvents();
  EXPECT_EQ(fromEp(tcpTo(kRemoteIp, 40000, 80)), TC_ACT_OK);
  auto ev = drainEvents();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].subtype, MB_VERDICT_AUDIT);
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_EGRESS).first, 0u);

  setSrcFlags(0);
  mb_datapath_config cfg{};
  cfg.flags = MB_CFG_F_POLICY_ALWAYS;
  ASSERT_TRUE(dp_->setConfig(cfg).ok());
  EXPECT_EQ(fromEp(tcpTo(kRemoteIp, 40001, 80)), TC_ACT_SHOT);
  cfg.flags = MB_CFG_F_POLICY_NEVER;
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED);
  ASSERT_TRUE(dp_->setConfig(cfg).ok());
  EXPECT_EQ(fromEp(tcpTo(kRemoteIp, 40002, 80)), TC_ACT_OK);
  cfg.flags = MB_CFG_F_TRACE_EVENTS;
  ASSERT_TRUE(dp_->setConfig(cfg).ok());
  setSrcFlags(0);
  drainEvents();
  EXPECT_EQ(fromEp(tcpTo(kRemoteIp, 40003, 80)), TC_ACT_OK);
  ev = drainEvents();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, MB_EVENT_TRACE);
  EXPECT_EQ(ev[0].subtype, MB_TRACE_TO_STACK);
}

TEST_F(DatapathBpfTest, ConntrackGcAndFlush) {
  ASSERT_EQ(fromEp(tcpTo(kRemoteIp, 40000, 80)), TC_ACT_OK);
  ASSERT_EQ(fromEp(PacketBuilder().ipv4(kSrcIp, kWorldIp).udp(5000, 53).build()), TC_ACT_OK);
  auto ct = dp_->listCt();
  ASSERT_TRUE(ct.ok());
  ASSERT_EQ(ct->size(), 2u);
  auto none = dp_->gcCt(0);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->deleted(), 0u);
  EXPECT_EQ(none->tcp_alive, 1u);
  EXPECT_EQ(none->other_alive, 1u);
  ASSERT_TRUE(dp_->flushCtFor(ipv4Be(kWorldIp)).ok());
  ct = dp_->listCt();
  ASSERT_TRUE(ct.ok());
  ASSERT_EQ(ct->size(), 1u);
  auto all = dp_->gcCt(UINT64_MAX);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->tcp_deleted, 1u);
  EXPECT_EQ(all->other_deleted, 0u);
  EXPECT_EQ(all->tcp_alive + all->other_alive, 0u);
  // Nothing else touched the map meanwhile: one clean walk each time.
  for (const auto* gc : {&*none, &*all}) {
    EXPECT_TRUE(gc->completed);
    EXPECT_EQ(gc->interrupts, 0u);
    EXPECT_EQ(gc->tcp_key_fallbacks + gc->other_key_fallbacks, 0u);
  }
}

// What the datapath reports to its observer (cilium_ipcache_events_total,
// cilium_ipcache_errors_total, cilium_bpf_syscall_duration_seconds), against
// the real maps: exactly one report per ipcache change, and exactly one timed
// syscall per call cilium_bpf_map_ops_total counts, with the same outcome.
TEST_F(DatapathBpfTest, ObserverSeesIpcacheChangesAndEveryCountedSyscall) {
  struct Recorder final : DatapathObserver {
    std::vector<std::string> ipcache;                  // "upsert", "delete/no_such_prefix", ...
    std::map<std::pair<std::string, bool>, int> calls;  // (operation, success) -> timed syscalls
    bool time = true;
    void ipcacheEvent(std::string_view type) override { ipcache.emplace_back(type); }
    void ipcacheError(std::string_view type, std::string_view error) override {
      ipcache.push_back(std::string(type) + "/" + std::string(error));
    }
    bool timeMapSyscalls() const override { return time; }
    void mapSyscall(std::string_view operation, bool success, double seconds) override {
      EXPECT_GE(seconds, 0.0);
      ++calls[{std::string(operation), success}];
    }
  } rec;
  auto opsByOperation = [this] {
    std::map<std::pair<std::string, bool>, int> out;
    for (const auto& c : dp_->mapOps()) out[{c.operation, c.outcome == "success"}] += static_cast<int>(c.count);
    return out;
  };
  const auto before = opsByOperation();
  dp_->setObserver(&rec);
  ASSERT_TRUE(dp_->upsertIpcache(ipv4Be("198.51.100.7"), 32, kRemoteId).ok());
  ASSERT_TRUE(dp_->deleteIpcache(ipv4Be("198.51.100.7"), 32).ok());
  ASSERT_TRUE(dp_->deleteIpcache(ipv4Be("198.51.100.7"), 32).ok());  // already gone: not an error
  EXPECT_FALSE(dp_->upsertIpcache(ipv4Be("198.51.100.7"), 33, kRemoteId).ok());
  EXPECT_FALSE(dp_->deleteIpcache(ipv4Be("198.51.100.7"), 33).ok());
  ASSERT_TRUE(dp_->upsertEndpoint(src_).ok());
  auto listed = dp_->listIpcache();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  dp_->setObserver(nullptr);
  ASSERT_TRUE(dp_->upsertIpcache(ipv4Be("198.51.100.8"), 32, kRemoteId).ok());  // not reported

  EXPECT_EQ(rec.ipcache, (std::vector<std::string>{"upsert", "delete", "delete/no_such_prefix",
                                                   "upsert/invalid_prefix", "delete/invalid_prefix"}));
  // 3 ipcache writes, 2 endpoint map writes, 1 lookup per listed entry (the
  // walk's getNextKey calls are not counted); the delete of a missing entry
  // is a success, as cilium_bpf_map_ops_total counts it.
  std::map<std::pair<std::string, bool>, int> want = {
      {{"update", true}, 3}, {{"delete", true}, 2}, {{"lookup", true}, static_cast<int>(listed->size())}};
  EXPECT_EQ(rec.calls, want);
  auto after = opsByOperation();
  for (const auto& [k, n] : before) after[k] -= n;
  std::erase_if(after, [](const auto& kv) { return kv.second == 0; });
  ++want[{"update", true}];  // the unobserved write is counted all the same
  EXPECT_EQ(after, want);
}

TEST_F(DatapathBpfTest, ReopenReusesPinnedMaps) {
  setPolicy(kSrcEp, {{egress(0, 0, 0), allow()}});
  auto dp2 = Datapath::open(DatapathOptions{guard_->root});
  ASSERT_TRUE(dp2.ok()) << dp2.error().message;
  auto eps = (*dp2)->listEndpoints();
  ASSERT_TRUE(eps.ok());
  EXPECT_EQ(eps->size(), 2u);
  auto pol = (*dp2)->dumpPolicy(kSrcEp);
  ASSERT_TRUE(pol.ok());
  EXPECT_EQ(pol->size(), 1u);
  auto usage = (*dp2)->mapUsage();
  ASSERT_TRUE(usage.ok());
  ASSERT_EQ(usage->size(), 7u);
  EXPECT_EQ((*usage)[5].name, MB_MAP_SERVICES);
  EXPECT_EQ((*usage)[6].name, MB_MAP_BACKENDS);
  EXPECT_EQ((*usage)[0].name, MB_MAP_ENDPOINTS);
  EXPECT_EQ((*usage)[0].entries, 2u);
  EXPECT_EQ((*usage)[0].max_entries, static_cast<size_t>(MB_ENDPOINTS_MAX));
  EXPECT_EQ((*usage)[1].entries, 1u);  // ipcache
  EXPECT_EQ((*usage)[2].entries, 1u);  // policy
}

TEST_F(DatapathBpfTest, IncompatiblePinnedMapIsNamed) {
  const std::string root = guard_->root + "-incompat";
  struct RootCleanup {
    std::string root;
    ~RootCleanup() { (void)Datapath::removePins(root); }
  } cleanup{root};
  ASSERT_EQ(mkdir(root.c_str(), 0700), 0);
  int fd = bpf_map_create(BPF_MAP_TYPE_LRU_HASH, "mb_ct4_v1", 8, 8, 16, nullptr);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(bpf_obj_pin(fd, (root + "/" MB_MAP_CT).c_str()), 0);
  close(fd);
  auto dp = Datapath::open(DatapathOptions{root});
  ASSERT_FALSE(dp.ok());
  EXPECT_NE(dp.error().message.find("pinned map " + root + "/" MB_MAP_CT " is incompatible"),
            std::string::npos)
      << dp.error().message;
}

// attach/detach on lo of a throwaway netns, entered by a helper thread only
// (netns is per thread): nothing outside the test sees the filters.
TEST_F(DatapathBpfTest, AttachReplaceDetachOnLoopbackInPrivateNetns) {
  std::string failure;
  std::thread t([&] {
    if (unshare(CLONE_NEWNET) != 0) {
      failure = std::string("unshare(CLONE_NEWNET): ") + membrane::errnoText(errno);
      return;
    }
    auto query = [](bpf_tc_attach_point point, uint32_t* prog_id) {
      bpf_tc_hook hook{};
      hook.sz = sizeof(hook);
      hook.ifindex = 1;
      hook.attach_point = point;
      bpf_tc_opts opts{};
      opts.sz = sizeof(opts);
      opts.handle = 1;
      opts.priority = 1;
      int r = bpf_tc_query(&hook, &opts);
      *prog_id = opts.prog_id;
      return r;
    };
    auto progId = [](int fd) {
      bpf_prog_info info{};
      uint32_t len = sizeof(info);
      return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0u;
    };
    for (int i = 0; i < 2; ++i) {  // the second attach replaces in place
      auto st = dp_->attach(1);
      if (!st.ok()) {
        failure = st.error().message;
        return;
      }
    }
    uint32_t in_id = 0, eg_id = 0;
    if (query(BPF_TC_INGRESS, &in_id) != 0 || in_id != progId(dp_->programFd(Program::FromEndpoint)))
      failure = "ingress filter is not from_endpoint";
    if (query(BPF_TC_EGRESS, &eg_id) != 0 || eg_id != progId(dp_->programFd(Program::ToEndpoint)))
      failure = "egress filter is not to_endpoint";
    for (int i = 0; i < 2; ++i) {  // detaching twice is fine
      auto st = dp_->detach(1);
      if (!st.ok()) failure = st.error().message;
    }
    if (query(BPF_TC_INGRESS, &in_id) == 0) failure = "ingress filter still attached";
  });
  t.join();
  EXPECT_EQ(failure, "");
}


// ---------------------------------------------------------------------------
// 6-tier lookup, ICMP types, RELATED ICMP errors

TEST_F(DatapathBpfTest, SixTierLookupWithProtoWildcard) {
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED | MB_EP_F_PROTO_WILDCARD);
  struct Tier {
    PolicyMapKey key;
    uint8_t match;
  } tiers[] = {
      {egress(kRemoteId, 80, IPPROTO_TCP), MB_MATCH_L3_L4},
      {egress(0, 80, IPPROTO_TCP), MB_MATCH_L4_ONLY},
      {egress(kRemoteId, 0, IPPROTO_TCP), MB_MATCH_L3_PROTO},
      {egress(0, 0, IPPROTO_TCP), MB_MATCH_PROTO_ONLY},
      {egress(kRemoteId, 0, 0), MB_MATCH_L3_ONLY},
      {egress(0, 0, 0), MB_MATCH_ALL},
  };
  // All six present: each packet hits the most specific, then we remove it.
  std::map<PolicyMapKey, PolicyMapValue> entries;
  for (const auto& t : tiers) entries[t.key] = allow(t.match * 10);
  uint16_t sport = 41000;
  for (const auto& t : tiers) {
    SCOPED_TRACE(static_cast<int>(t.match));
    setPolicy(kSrcEp, entries);
    drainEvents();
    auto pkt = tcpTo(kRemoteIp, sport++, 80);
    EXPECT_EQ(fromEp(pkt), TC_ACT_OK);
    auto ev = drainEvents();
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].subtype, MB_VERDICT_FORWARDED);
    EXPECT_EQ(ev[0].match_type, t.match);
    EXPECT_EQ(ev[0].cookie, t.match * 10u);
    auto stats = dp_->dumpPolicy(kSrcEp);
    ASSERT_TRUE(stats.ok());
    for (const auto& st : *stats) {
      EXPECT_EQ(st.packets, st.key == t.key ? 1u : 0u) << "only the matched entry counts";
      if (st.key == t.key) {
        EXPECT_EQ(st.bytes, pkt.size());
      }
    }
    entries.erase(t.key);
    setPolicy(kSrcEp, {});  // reset counters
  }
  EXPECT_EQ(fromEp(tcpTo(kRemoteIp, sport++, 80)), TC_ACT_SHOT);  // nothing left
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_EGRESS).first, 1u);
}

TEST_F(DatapathBpfTest, ProtoWildcardTiersNeedTheEndpointFlag) {
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED);
  setPolicy(kSrcEp, {{egress(kRemoteId, 0, IPPROTO_TCP), allow(3)}, {egress(0, 0, IPPROTO_UDP), allow(4)}});
  EXPECT_EQ(fromEp(tcpTo(kRemoteIp, 40000, 80)), TC_ACT_SHOT);
  EXPECT_EQ(fromEp(PacketBuilder().ipv4(kSrcIp, kRemoteIp).udp(5000, 53).build()), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_EGRESS).first, 2u);
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED | MB_EP_F_PROTO_WILDCARD);
  drainEvents();
  EXPECT_EQ(fromEp(tcpTo(kRemoteIp, 40001, 80)), TC_ACT_OK);
  EXPECT_EQ(fromEp(PacketBuilder().ipv4(kSrcIp, kRemoteIp).udp(5001, 53).build()), TC_ACT_OK);
  auto ev = drainEvents();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].match_type, MB_MATCH_L3_PROTO);
  EXPECT_EQ(ev[0].cookie, 3u);
  EXPECT_EQ(ev[1].match_type, MB_MATCH_PROTO_ONLY);
  EXPECT_EQ(ev[1].cookie, 4u);
  // A TCP entry does not allow UDP and vice versa.
  EXPECT_EQ(fromEp(PacketBuilder().ipv4(kSrcIp, kWorldIp).udp(5002, 53).build()), TC_ACT_OK);  // proto-only
  setPolicy(kSrcEp, {{egress(kRemoteId, 0, IPPROTO_TCP), allow(3)}});
  EXPECT_EQ(fromEp(PacketBuilder().ipv4(kSrcIp, kRemoteIp).udp(5003, 53).build()), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_EGRESS).first, 3u);
}

TEST_F(DatapathBpfTest, IcmpTypeIsThePolicyPort) {
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED | MB_EP_F_INGRESS_ENFORCED);
  setPolicy(kSrcEp, {{egress(kRemoteId, 8, IPPROTO_ICMP), allow(8)}});
  drainEvents();
  EXPECT_EQ(fromEp(PacketBuilder().ipv4(kSrcIp, kRemoteIp).icmpEcho(8, 5, 1).build()), TC_ACT_OK);
  auto ev = drainEvents();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].match_type, MB_MATCH_L3_L4);
  EXPECT_EQ(ev[0].icmp_type, 8);
  // The echo reply is conntracked by echo id: passes without an ingress rule.
  EXPECT_EQ(toEp(PacketBuilder().ipv4(kRemoteIp, kSrcIp).icmpEcho(0, 5, 1).build()), TC_ACT_OK);
  // Timestamp request (13) is another "port".
  EXPECT_EQ(fromEp(PacketBuilder().ipv4(kSrcIp, kRemoteIp).icmpEcho(13, 5, 1).build()), TC_ACT_SHOT);
  // An unsolicited echo reply (type 0: dport 0) needs a type-0 / proto entry.
  EXPECT_EQ(toEp(PacketBuilder().ipv4(kRemoteIp, kSrcIp).icmpEcho(0, 6, 1).build()), TC_ACT_SHOT);
  setPolicy(kSrcEp, {{egress(kRemoteId, 8, IPPROTO_ICMP), allow(8)}, {ingress(kRemoteId, 0, IPPROTO_ICMP), allow(0)}});
  drainEvents();
  EXPECT_EQ(toEp(PacketBuilder().ipv4(kRemoteIp, kSrcIp).icmpEcho(0, 7, 1).build()), TC_ACT_OK);
  ev = drainEvents();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].match_type, MB_MATCH_L3_PROTO);
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_EGRESS).first, 1u);
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_INGRESS).first, 1u);
}

std::vector<uint8_t> ipPart(const std::vector<uint8_t>& frame, size_t max = 0) {
  std::vector<uint8_t> ip(frame.begin() + 14, frame.end());
  if (max && ip.size() > max) ip.resize(max);
  return ip;
}

TEST_F(DatapathBpfTest, IcmpErrorAboutTrackedFlowIsRelated) {
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED | MB_EP_F_INGRESS_ENFORCED);
  setPolicy(kSrcEp, {{egress(kRemoteId, 53, IPPROTO_UDP), allow()}});
  auto req = PacketBuilder().ipv4(kSrcIp, kRemoteIp).udp(5353, 53).payload(30).build();
  ASSERT_EQ(fromEp(req), TC_ACT_OK);
  mb_datapath_config cfg{};
  cfg.flags = MB_CFG_F_TRACE_EVENTS;
  ASSERT_TRUE(dp_->setConfig(cfg).ok());
  drainEvents();

  // Port unreachable from the server, quoting IP header + 8 bytes (RFC 792).
  auto err = PacketBuilder().ipv4(kRemoteIp, kSrcIp).icmpError(3, 3, ipPart(req, 28)).build();
  EXPECT_EQ(toEp(err), TC_ACT_OK);
  // Time exceeded from a router on the way, quoting the whole packet.
  auto ttl = PacketBuilder().ipv4("192.0.2.1", kSrcIp).icmpError(11, 0, ipPart(req)).build();
  EXPECT_EQ(toEp(ttl), TC_ACT_OK);
  auto ev = drainEvents();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].type, MB_EVENT_TRACE);
  EXPECT_EQ(ev[0].ct_state, 3);  // related
  EXPECT_EQ(ev[0].icmp_type, 3);
  EXPECT_EQ(ev[1].ct_state, 3);
  EXPECT_EQ(metric(0, MB_DIR_INGRESS), std::make_pair(uint64_t{2}, uint64_t{err.size() + ttl.size()}));
  auto ct = dp_->listCt();
  ASSERT_TRUE(ct.ok());
  ASSERT_EQ(ct->size(), 1u) << "RELATED packets create no conntrack entries";
  EXPECT_EQ((*ct)[0].entry.rx_packets, 0u);

  // The same error about an unknown flow goes through policy: ICMP type 3.
  auto other = PacketBuilder().ipv4(kSrcIp, kRemoteIp).udp(5354, 53).build();
  auto stray = PacketBuilder().ipv4(kRemoteIp, kSrcIp).icmpError(3, 3, ipPart(other, 28)).build();
  EXPECT_EQ(toEp(stray), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_INGRESS).first, 1u);
  setPolicy(kSrcEp, {{egress(kRemoteId, 53, IPPROTO_UDP), allow()}, {ingress(0, 3, IPPROTO_ICMP), allow(33)}});
  drainEvents();
  EXPECT_EQ(toEp(stray), TC_ACT_OK);
  ev = drainEvents();
  ASSERT_EQ(ev.size(), 2u);  // the verdict, then the trace of the forwarded packet
  EXPECT_EQ(ev[1].type, MB_EVENT_TRACE);
  EXPECT_EQ(ev[0].type, MB_EVENT_POLICY_VERDICT);
  EXPECT_EQ(ev[0].match_type, MB_MATCH_L4_ONLY);
  EXPECT_EQ(ev[0].cookie, 33u);
  // A truncated quote (inner L4 missing) is not RELATED either.
  setPolicy(kSrcEp, {{egress(kRemoteId, 53, IPPROTO_UDP), allow()}});
  auto cut = PacketBuilder().ipv4(kRemoteIp, kSrcIp).icmpError(3, 3, ipPart(req, 22)).build();
  EXPECT_EQ(toEp(cut), TC_ACT_SHOT);
  // Errors the pod itself sends about a flow it answered are RELATED too.
  auto inbound = PacketBuilder().ipv4(kRemoteIp, kSrcIp).tcp(33000, 22, kTcpSyn).build();
  setPolicy(kSrcEp, {{ingress(kRemoteId, 22, IPPROTO_TCP), allow()}});
  ASSERT_EQ(toEp(inbound), TC_ACT_OK);
  auto reset = PacketBuilder().ipv4(kSrcIp, kRemoteIp).icmpError(3, 10, ipPart(inbound, 28)).build();
  EXPECT_EQ(fromEp(reset), TC_ACT_OK);
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_EGRESS).first, 0u);
}

// ---------------------------------------------------------------------------
// Services

constexpr const char* kVip = "10.96.0.10";
constexpr uint32_t kDst2Ifindex = 4243;
constexpr uint32_t kDst2Ep = 300;
constexpr const char* kDst2Ip = "10.200.0.6";
const MacAddr kSrcMac{0x02, 0xaa, 0, 0, 0, 0x07};
const MacAddr kSrcNodeMac{0x02, 0xcc, 0, 0, 0, 0x07};
const MacAddr kDst2Mac{0x02, 0xbb, 0, 0, 0, 0x06};
const MacAddr kDst2NodeMac{0x02, 0xcc, 0, 0, 0, 0x06};

class DatapathServiceTest : public DatapathBpfTest {
 protected:
  void SetUp() override {
    DatapathBpfTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    std::memcpy(src_.mac, kSrcMac.data(), 6);
    std::memcpy(src_.node_mac, kSrcNodeMac.data(), 6);
    ASSERT_TRUE(dp_->upsertEndpoint(src_).ok());
    dst2_.ep_id = kDst2Ep;
    dst2_.identity = kDstId;  // replicas share the identity
    dst2_.ifindex = kDst2Ifindex;
    dst2_.ipv4 = ipv4Be(kDst2Ip);
    std::memcpy(dst2_.mac, kDst2Mac.data(), 6);
    std::memcpy(dst2_.node_mac, kDst2NodeMac.data(), 6);
    ASSERT_TRUE(dp_->upsertEndpoint(dst2_).ok());
    ASSERT_TRUE(dp_->upsertService(ipv4Be(kVip), 80, IPPROTO_TCP,
                                   {{ipv4Be(kDstIp), 8080}, {ipv4Be(kDst2Ip), 8080}})
                    .ok());
  }
  // test_run only accepts ifindex 1: let `ep`'s programs run there.
  void actAs(mb_endpoint_info ep) {
    ep.ifindex = kSrcIfindex;
    ASSERT_TRUE(dp_->upsertEndpoint(ep).ok());
  }
  const mb_endpoint_info& backendFor(uint32_t ip_be) const { return ip_be == dst_.ipv4 ? dst_ : dst2_; }

  mb_endpoint_info dst2_{};
};

// Destination IPv4 of a frame (network order).
uint32_t daddrOf(const std::vector<uint8_t>& f) {
  uint32_t a;
  std::memcpy(&a, &f[14 + 16], 4);
  return a;
}

TEST_F(DatapathServiceTest, SynToVipIsDnatedStickyAndReplyIsReverseNated) {
  auto syn = PacketBuilder().ipv4(kSrcIp, kVip).tcp(40000, 80, kTcpSyn).build();
  auto res = run(Program::FromEndpoint, syn);
  ASSERT_EQ(res.retval, TC_ACT_REDIRECT);
  const uint32_t chosen = daddrOf(res.data);
  ASSERT_TRUE(chosen == ipv4Be(kDstIp) || chosen == ipv4Be(kDst2Ip));
  const auto& be = backendFor(chosen);
  MacAddr be_mac, be_node_mac;
  std::memcpy(be_mac.data(), be.mac, 6);
  std::memcpy(be_node_mac.data(), be.node_mac, 6);
  const std::string be_ip = chosen == ipv4Be(kDstIp) ? kDstIp : kDst2Ip;
  auto want = PacketBuilder().eth(be_node_mac, be_mac).ipv4(kSrcIp, be_ip).tcp(40000, 8080, kTcpSyn).build();
  EXPECT_EQ(res.data, want);
  EXPECT_TRUE(checksumsValid(res.data));

  // Conntrack: SERVICE entry {A, VIP:80} -> backend, flow entry {A, backend:8080} with rev_nat_id.
  auto svcs = dp_->listServices();
  ASSERT_TRUE(svcs.ok());
  ASSERT_EQ(svcs->size(), 1u);
  const uint16_t id = (*svcs)[0].id;
  EXPECT_EQ(id, 1);
  auto ct = dp_->listCt();
  ASSERT_TRUE(ct.ok());
  ASSERT_EQ(ct->size(), 2u);
  int service_entries = 0;
  for (const auto& f : *ct) {
    EXPECT_EQ(f.entry.rev_nat_id, id);
    if (f.key.flags & MB_CT_KEY_F_SERVICE) {
      ++service_entries;
      EXPECT_EQ(f.key.daddr, ipv4Be(kVip));
      EXPECT_EQ(ntohs(f.key.dport), 80);
      EXPECT_EQ(f.entry.backend_ip, chosen);
      EXPECT_EQ(ntohs(f.entry.backend_port), 8080);
      EXPECT_GT(f.entry.expires_ns, 0u);
    } else {
      EXPECT_EQ(f.key.daddr, chosen);
      EXPECT_EQ(ntohs(f.key.dport), 8080);
      EXPECT_EQ(f.entry.dst_identity, kDstId);
    }
  }
  EXPECT_EQ(service_entries, 1);

  // Reversing the backend order changes slots, not this flow's backend.
  ASSERT_TRUE(dp_->upsertService(ipv4Be(kVip), 80, IPPROTO_TCP,
                                 {{ipv4Be(kDst2Ip), 8080}, {ipv4Be(kDstIp), 8080}})
                  .ok());
  for (int i = 0; i < 3; ++i) {
    auto ack = PacketBuilder().ipv4(kSrcIp, kVip).tcp(40000, 80, kTcpAck).payload(10 * i).build();
    auto r2 = run(Program::FromEndpoint, ack);
    ASSERT_EQ(r2.retval, TC_ACT_REDIRECT);
    EXPECT_EQ(daddrOf(r2.data), chosen);
    EXPECT_TRUE(checksumsValid(r2.data));
  }

  // Reply from the backend's own program: source becomes VIP:80, delivered into A.
  actAs(be);
  auto reply = PacketBuilder().ipv4(be_ip, kSrcIp).tcp(8080, 40000, kTcpSyn | kTcpAck).payload(5).build();
  auto rr = run(Program::FromEndpoint, reply);
  ASSERT_EQ(rr.retval, TC_ACT_REDIRECT);
  auto want_reply =
      PacketBuilder().eth(kSrcNodeMac, kSrcMac).ipv4(kVip, kSrcIp).tcp(80, 40000, kTcpSyn | kTcpAck).payload(5).build();
  EXPECT_EQ(rr.data, want_reply);
  EXPECT_TRUE(checksumsValid(rr.data));

  // The same reply reaching A from the stack (non-local backend path).
  actAs(src_);
  auto rr2 = run(Program::ToEndpoint, reply);
  ASSERT_EQ(rr2.retval, TC_ACT_OK);
  auto want_reply2 = PacketBuilder().ipv4(kVip, kSrcIp).tcp(80, 40000, kTcpSyn | kTcpAck).payload(5).build();
  EXPECT_EQ(rr2.data, want_reply2);

  ct = dp_->listCt();
  ASSERT_TRUE(ct.ok());
  ASSERT_EQ(ct->size(), 2u);
  for (const auto& f : *ct) {
    if (f.key.flags & MB_CT_KEY_F_SERVICE) continue;
    EXPECT_EQ(f.entry.tx_packets, 4u);
    EXPECT_EQ(f.entry.rx_packets, 2u);
  }
}

TEST_F(DatapathServiceTest, NewFlowsSpreadOverBackends) {
  std::map<uint32_t, int> hits;
  for (uint16_t sport = 42000; sport < 42032; ++sport) {
    auto res = run(Program::FromEndpoint, PacketBuilder().ipv4(kSrcIp, kVip).tcp(sport, 80, kTcpSyn).build());
    ASSERT_EQ(res.retval, TC_ACT_REDIRECT);
    EXPECT_TRUE(checksumsValid(res.data));
    ++hits[daddrOf(res.data)];
  }
  ASSERT_EQ(hits.size(), 2u);
  EXPECT_EQ(hits[ipv4Be(kDstIp)] + hits[ipv4Be(kDst2Ip)], 32);
  EXPECT_GT(hits[ipv4Be(kDstIp)], 0);
  EXPECT_GT(hits[ipv4Be(kDst2Ip)], 0);
}

TEST_F(DatapathServiceTest, UdpServiceRewritesChecksums) {
  ASSERT_TRUE(dp_->upsertService(ipv4Be(kVip), 53, IPPROTO_UDP, {{ipv4Be(kDst2Ip), 5353}}).ok());
  auto q = PacketBuilder().ipv4(kSrcIp, kVip).udp(40000, 53).payload(33).build();
  auto res = run(Program::FromEndpoint, q);
  ASSERT_EQ(res.retval, TC_ACT_REDIRECT);
  auto want = PacketBuilder().eth(kDst2NodeMac, kDst2Mac).ipv4(kSrcIp, kDst2Ip).udp(40000, 5353).payload(33).build();
  EXPECT_EQ(res.data, want);
  EXPECT_TRUE(checksumsValid(res.data));
  // UDP without checksum (0) stays without.
  auto nocsum = q;
  nocsum[14 + 20 + 6] = 0;
  nocsum[14 + 20 + 7] = 0;
  res = run(Program::FromEndpoint, nocsum);
  ASSERT_EQ(res.retval, TC_ACT_REDIRECT);
  EXPECT_EQ(res.data[14 + 20 + 6], 0);
  EXPECT_EQ(res.data[14 + 20 + 7], 0);
  EXPECT_TRUE(checksumsValid(res.data));
}

TEST_F(DatapathServiceTest, BackendPolicySeesClientIdentity) {
  for (auto* ep : {&dst_, &dst2_}) {
    ep->flags = MB_EP_F_INGRESS_ENFORCED;
    ASSERT_TRUE(dp_->upsertEndpoint(*ep).ok());
    // The backend port is what the backend's policy names.
    setPolicy(ep->ep_id, {{ingress(kSrcId, 8080, IPPROTO_TCP), allow(7)}});
  }
  drainEvents();
  auto res = run(Program::FromEndpoint, PacketBuilder().ipv4(kSrcIp, kVip).tcp(40000, 80, kTcpSyn).build());
  ASSERT_EQ(res.retval, TC_ACT_REDIRECT);
  auto ev = drainEvents();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, MB_EVENT_POLICY_VERDICT);
  EXPECT_EQ(ev[0].direction, MB_DIR_INGRESS);
  EXPECT_EQ(ev[0].src_identity, kSrcId);
  EXPECT_EQ(ev[0].dst_identity, kDstId);
  EXPECT_EQ(ev[0].daddr, daddrOf(res.data));
  EXPECT_EQ(ev[0].cookie, 7u);
  // Another client identity is denied at the backend (133, INGRESS).
  for (auto* ep : {&dst_, &dst2_}) setPolicy(ep->ep_id, {{ingress(kSrcId + 1, 8080, IPPROTO_TCP), allow()}});
  auto syn2 = PacketBuilder().ipv4(kSrcIp, kVip).tcp(40001, 80, kTcpSyn).build();
  EXPECT_EQ(fromEp(syn2), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_INGRESS), std::make_pair(uint64_t{1}, uint64_t{syn2.size()}));
  // A dropped flow leaves no SERVICE entry behind (only the first flow's two).
  auto ct = dp_->listCt();
  ASSERT_TRUE(ct.ok());
  EXPECT_EQ(ct->size(), 2u);
  // Egress policy of the client is evaluated against the backend too.
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED);
  setPolicy(kSrcEp, {{egress(kDstId, 80, IPPROTO_TCP), allow()}});  // VIP port: no match
  EXPECT_EQ(fromEp(PacketBuilder().ipv4(kSrcIp, kVip).tcp(40002, 80, kTcpSyn).build()), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_POLICY, MB_DIR_EGRESS).first, 1u);
}

TEST_F(DatapathServiceTest, NoBackendDrops158AndDeleteRemovesEverything) {
  ASSERT_TRUE(dp_->upsertService(ipv4Be(kVip), 80, IPPROTO_TCP, {}).ok());
  auto syn = PacketBuilder().ipv4(kSrcIp, kVip).tcp(40000, 80, kTcpSyn).build();
  EXPECT_EQ(fromEp(syn), TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_NO_SERVICE, MB_DIR_EGRESS), std::make_pair(uint64_t{1}, uint64_t{syn.size()}));
  auto ev = drainEvents();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, MB_EVENT_DROP);
  EXPECT_EQ(ev[0].subtype, MB_DROP_NO_SERVICE);
  auto svcs = dp_->listServices();
  ASSERT_TRUE(svcs.ok());
  ASSERT_EQ(svcs->size(), 1u);
  EXPECT_TRUE((*svcs)[0].backends.empty());

  // Another port of the VIP is not a service: to the stack, untouched.
  auto other = PacketBuilder().ipv4(kSrcIp, kVip).tcp(40000, 81, kTcpSyn).build();
  auto res = run(Program::FromEndpoint, other);
  EXPECT_EQ(res.retval, TC_ACT_OK);
  EXPECT_EQ(res.data, other);

  ASSERT_TRUE(dp_->upsertService(ipv4Be(kVip), 80, IPPROTO_TCP, {{ipv4Be(kDstIp), 8080}}).ok());
  ASSERT_TRUE(dp_->upsertService(ipv4Be(kVip), 443, IPPROTO_TCP, {{ipv4Be(kDst2Ip), 8443}}).ok());
  EXPECT_EQ(fromEp(syn), TC_ACT_REDIRECT);
  svcs = dp_->listServices();
  ASSERT_TRUE(svcs.ok());
  ASSERT_EQ(svcs->size(), 2u);
  EXPECT_EQ((*svcs)[0].port, 80);
  EXPECT_EQ((*svcs)[0].id, 1);
  EXPECT_EQ((*svcs)[0].backends, (std::vector<Backend>{{ipv4Be(kDstIp), 8080}}));
  EXPECT_EQ((*svcs)[1].port, 443);
  EXPECT_EQ((*svcs)[1].id, 2);

  ASSERT_TRUE(dp_->deleteService(ipv4Be(kVip), 80, IPPROTO_TCP).ok());
  ASSERT_TRUE(dp_->deleteService(ipv4Be(kVip), 80, IPPROTO_TCP).ok());  // missing is fine
  svcs = dp_->listServices();
  ASSERT_TRUE(svcs.ok());
  ASSERT_EQ(svcs->size(), 1u);
  auto ct = dp_->listCt();
  ASSERT_TRUE(ct.ok());
  // The service's flows are flushed with it; the port-81 flow to the stack stays.
  ASSERT_EQ(ct->size(), 1u);
  EXPECT_EQ(ntohs((*ct)[0].key.dport), 81);
  EXPECT_EQ((*ct)[0].entry.rev_nat_id, 0);
  auto usage = dp_->mapUsage();
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ((*usage)[5].entries, 1u);  // services
  EXPECT_EQ((*usage)[6].entries, 1u);  // backends
  EXPECT_FALSE(dp_->upsertService(ipv4Be(kVip), 80, IPPROTO_ICMP, {}).ok());
}

TEST_F(DatapathServiceTest, ShrinkingDeletesStaleSlotsAndFlushPinsBackend) {
  ASSERT_EQ(fromEp(PacketBuilder().ipv4(kSrcIp, kVip).tcp(40000, 80, kTcpSyn).build()), TC_ACT_REDIRECT);
  ASSERT_TRUE(dp_->upsertService(ipv4Be(kVip), 80, IPPROTO_TCP, {{ipv4Be(kDst2Ip), 8080}}).ok());
  auto usage = dp_->mapUsage();
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ((*usage)[6].entries, 1u);
  // The backend goes away for good: its flows and the SERVICE entries pinning it.
  ASSERT_TRUE(dp_->flushCtFor(ipv4Be(kDstIp)).ok());
  ASSERT_TRUE(dp_->flushCtFor(ipv4Be(kDst2Ip)).ok());
  auto ct = dp_->listCt();
  ASSERT_TRUE(ct.ok());
  EXPECT_TRUE(ct->empty());
  auto res = run(Program::FromEndpoint, PacketBuilder().ipv4(kSrcIp, kVip).tcp(40000, 80, kTcpAck).build());
  ASSERT_EQ(res.retval, TC_ACT_REDIRECT);
  EXPECT_EQ(daddrOf(res.data), ipv4Be(kDst2Ip));
}

TEST_F(DatapathServiceTest, ServiceCidrLimitsLookups) {
  mb_datapath_config cfg{};
  cfg.svc_cidr = ipv4Be("10.96.0.0");
  cfg.svc_cidr_len = 16;
  ASSERT_TRUE(dp_->setConfig(cfg).ok());
  auto syn = PacketBuilder().ipv4(kSrcIp, kVip).tcp(40000, 80, kTcpSyn).build();
  EXPECT_EQ(fromEp(syn), TC_ACT_REDIRECT);
  cfg.svc_cidr = ipv4Be("10.97.0.0");
  ASSERT_TRUE(dp_->setConfig(cfg).ok());
  auto syn2 = PacketBuilder().ipv4(kSrcIp, kVip).tcp(40001, 80, kTcpSyn).build();
  auto res = run(Program::FromEndpoint, syn2);
  EXPECT_EQ(res.retval, TC_ACT_OK);
  EXPECT_EQ(res.data, syn2);
}

// ---------------------------------------------------------------------------
// L7 proxy redirect

constexpr uint16_t kProxyPort = 15001;

TEST_F(DatapathServiceTest, IngressProxyEntryRedirectsToStackWithMark) {
  dst_.flags = MB_EP_F_INGRESS_ENFORCED;
  ASSERT_TRUE(dp_->upsertEndpoint(dst_).ok());
  setPolicy(kDstEp, {{ingress(kSrcId, 80, IPPROTO_TCP), PolicyMapValue{false, kProxyPort, 9}}});
  auto syn = tcpTo(kDstIp, 40000, 80, kTcpSyn, 4);
  drainEvents();
  auto res = run(Program::FromEndpoint, syn);
  EXPECT_EQ(res.retval, TC_ACT_OK) << "to the host stack, not redirect_peer";
  EXPECT_EQ(res.mark, MB_MARK_MAGIC_TO_PROXY | (uint32_t{kProxyPort} << 16));
  EXPECT_EQ(res.data, syn) << "no MAC rewrite: the stack receives it as from the pod";
  auto ev = drainEvents();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, MB_EVENT_POLICY_VERDICT);
  EXPECT_EQ(ev[0].subtype, MB_VERDICT_REDIRECTED);
  EXPECT_EQ(ev[0].direction, MB_DIR_INGRESS);
  EXPECT_EQ(ev[0].cookie, 9u);
  EXPECT_EQ(metric(0, MB_DIR_EGRESS), std::make_pair(uint64_t{1}, uint64_t{syn.size()}));
  EXPECT_EQ(metric(0, MB_DIR_INGRESS).first, 0u) << "counted when the proxy delivers";
  auto ct = dp_->listCt();
  ASSERT_TRUE(ct.ok());
  ASSERT_EQ(ct->size(), 1u);
  EXPECT_TRUE((*ct)[0].entry.flags & MB_CT_F_PROXY_REDIRECT);
  EXPECT_EQ(ntohs((*ct)[0].entry.proxy_port), kProxyPort);

  // Established packets keep going to the proxy.
  auto ack = tcpTo(kDstIp, 40000, 80, kTcpAck, 100);
  res = run(Program::FromEndpoint, ack);
  EXPECT_EQ(res.retval, TC_ACT_OK);
  EXPECT_EQ(res.mark, MB_MARK_MAGIC_TO_PROXY | (uint32_t{kProxyPort} << 16));

  // The proxy's upstream into B (identity of A in its mark) is not redirected again.
  actAs(dst_);
  auto up = tcpTo(kDstIp, 40000, 80, kTcpAck, 100);
  res = run(Program::ToEndpoint, up, MB_MARK_MAGIC_PROXY_INGRESS | (kSrcId << 16));
  EXPECT_EQ(res.retval, TC_ACT_OK);
  EXPECT_EQ(res.mark, MB_MARK_MAGIC_PROXY_INGRESS | (kSrcId << 16));
  EXPECT_EQ(metric(0, MB_DIR_INGRESS).first, 1u);
  // B's reply on the proxied flow goes to the stack (the proxy), mark port 0.
  auto reply = PacketBuilder().ipv4(kDstIp, kSrcIp).tcp(80, 40000, kTcpSyn | kTcpAck).build();
  res = run(Program::FromEndpoint, reply);
  EXPECT_EQ(res.retval, TC_ACT_OK);
  EXPECT_EQ(res.mark, uint32_t{MB_MARK_MAGIC_TO_PROXY});
  EXPECT_EQ(res.data, reply);
  // A packet still marked for the proxy when it reaches B: no proxy took it.
  auto lost = tcpTo(kDstIp, 40005, 80);
  res = run(Program::ToEndpoint, lost, MB_MARK_MAGIC_TO_PROXY | (uint32_t{kProxyPort} << 16));
  EXPECT_EQ(res.retval, TC_ACT_SHOT);
  EXPECT_EQ(metric(MB_DROP_PROXY_LOOKUP_FAILED, MB_DIR_INGRESS).first, 1u);
}

// The real transparent upstream: the proxy's own connection to B (client
// IP, a port of its own) is a NEW flow at B's to_endpoint. Its CT entry gets
// MB_CT_F_PROXY_REDIRECT, so B's replies go to the host stack (the proxy's
// socket owns the spoofed tuple) instead of being redirected into A.
TEST_F(DatapathServiceTest, ProxyUpstreamFlowRepliesGoToTheStack) {
  dst_.flags = MB_EP_F_INGRESS_ENFORCED;
  ASSERT_TRUE(dp_->upsertEndpoint(dst_).ok());
  setPolicy(kDstEp, {{ingress(kSrcId, 80, IPPROTO_TCP), PolicyMapValue{false, kProxyPort, 9}}});
  actAs(dst_);
  auto up = tcpTo(kDstIp, 45678, 80, kTcpSyn, 0);
  auto res = run(Program::ToEndpoint, up, MB_MARK_MAGIC_PROXY_INGRESS | (kSrcId << 16));
  EXPECT_EQ(res.retval, TC_ACT_OK);
  auto ct = dp_->listCt();
  ASSERT_TRUE(ct.ok());
  ASSERT_EQ(ct->size(), 1u);
  EXPECT_TRUE((*ct)[0].entry.flags & MB_CT_F_PROXY_REDIRECT);
  EXPECT_EQ((*ct)[0].entry.proxy_port, 0) << "not redirected itself";
  EXPECT_EQ((*ct)[0].entry.src_identity, kSrcId);
  auto reply = PacketBuilder().ipv4(kDstIp, kSrcIp).tcp(80, 45678, kTcpSyn | kTcpAck).build();
  res = run(Program::FromEndpoint, reply);
  EXPECT_EQ(res.retval, TC_ACT_OK) << "to the stack, not redirect_peer into A";
  EXPECT_EQ(res.mark, uint32_t{MB_MARK_MAGIC_TO_PROXY});
  EXPECT_EQ(res.data, reply);
}

TEST_F(DatapathBpfTest, EgressProxyEntryAndStackIngressHairpin) {
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED | MB_EP_F_INGRESS_ENFORCED);
  setPolicy(kSrcEp, {{egress(kRemoteId, 80, IPPROTO_TCP), PolicyMapValue{false, kProxyPort, 1}},
                     {ingress(kRemoteId, 8080, IPPROTO_TCP), PolicyMapValue{false, 15002, 2}}});
  auto res = run(Program::FromEndpoint, tcpTo(kRemoteIp, 40000, 80));
  EXPECT_EQ(res.retval, TC_ACT_OK);
  EXPECT_EQ(res.mark, MB_MARK_MAGIC_TO_PROXY | (uint32_t{kProxyPort} << 16));
  auto ev = drainEvents();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].subtype, MB_VERDICT_REDIRECTED);
  EXPECT_EQ(ev[0].direction, MB_DIR_EGRESS);
  // From the stack into the pod, hitting an L7 ingress entry: back into the
  // stack through the veth's ingress, marked for the proxy.
  auto in = PacketBuilder().ipv4(kRemoteIp, kSrcIp).tcp(50000, 8080, kTcpSyn).build();
  res = run(Program::ToEndpoint, in);
  EXPECT_EQ(res.retval, TC_ACT_REDIRECT);
  EXPECT_EQ(res.mark, MB_MARK_MAGIC_TO_PROXY | (uint32_t{15002} << 16));
  // The egress proxy's upstream keeps the identity from its mark and still
  // meets the ingress policy (here: an L7 entry, so on to the ingress proxy).
  res = run(Program::ToEndpoint, PacketBuilder().ipv4(kRemoteIp, kSrcIp).tcp(50001, 8080, kTcpSyn).build(),
            MB_MARK_MAGIC_PROXY_EGRESS | (kRemoteId << 16));
  EXPECT_EQ(res.retval, TC_ACT_REDIRECT);
}

// ---------------------------------------------------------------------------
// Cost of the established allow path (reported, not asserted).

TEST_F(DatapathBpfTest, BenchEstablishedAllowPath) {
  setSrcFlags(MB_EP_F_EGRESS_ENFORCED);
  setDstFlags(MB_EP_F_INGRESS_ENFORCED);
  setPolicy(kSrcEp, {{egress(kDstId, 80, IPPROTO_TCP), allow()}, {egress(kRemoteId, 80, IPPROTO_TCP), allow()}});
  setPolicy(kDstEp, {{ingress(kSrcId, 80, IPPROTO_TCP), allow()}});
  mb_datapath_config cfg{};
  cfg.svc_cidr = ipv4Be("10.96.0.0");
  cfg.svc_cidr_len = 16;
  ASSERT_TRUE(dp_->setConfig(cfg).ok());
  auto bench = [&](const char* name, const std::vector<uint8_t>& pkt, int want) {
    ASSERT_EQ(fromEp(tcpTo(name[0] == 'l' ? kDstIp : kRemoteIp, 40000, 80)), want);  // establish
    constexpr uint32_t kRepeat = 1000000;
    auto txNow = [&] {
      uint64_t tx = 0;
      if (auto ct = dp_->listCt(); ct.ok())
        for (const auto& f : *ct) tx += f.entry.tx_packets;
      return tx;
    };
    const uint64_t tx_before = txNow();
    std::vector<uint8_t> out(pkt.size() + 64);
    __sk_buff ctx{};
    ctx.ifindex = kSrcIfindex;
    bpf_test_run_opts opts{};
    opts.sz = sizeof(opts);
    opts.data_in = pkt.data();
    opts.data_size_in = static_cast<uint32_t>(pkt.size());
    opts.data_out = out.data();
    opts.data_size_out = static_cast<uint32_t>(out.size());
    opts.ctx_in = &ctx;
    opts.ctx_size_in = sizeof(ctx);
    opts.repeat = kRepeat;
    ASSERT_EQ(bpf_prog_test_run_opts(dp_->programFd(Program::FromEndpoint), &opts), 0);
    EXPECT_EQ(static_cast<int>(opts.retval), want);
    std::printf("[ bench    ] from_endpoint established TCP allow, %s: %u ns/packet (repeat %u)\n", name,
                opts.duration, kRepeat);
    // Every repetition went through conntrack as the established flow.
    EXPECT_EQ(txNow() - tx_before, kRepeat);
  };
  bench("local pod (egress+ingress policy, redirect_peer)", tcpTo(kDstIp, 40000, 80, kTcpAck, 64), TC_ACT_REDIRECT);
  bench("remote (egress policy, to stack)", tcpTo(kRemoteIp, 40000, 80, kTcpAck, 64), TC_ACT_OK);
}

}  // namespace
}  // namespace membrane::kernel

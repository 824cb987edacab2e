// The skeleton's maps (as compiled from bpf/) agree with the shared header
// that C++ uses: names and key/value sizes. Opens without loading: no root.
#include <bpf/libbpf.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>

#include "bpf/shared/datapath.h"
#include "datapath.skel.h"

namespace {

struct SkelDeleter {
  void operator()(membrane_datapath* s) const { membrane_datapath__destroy(s); }
};

class DatapathLayoutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    skel_.reset(membrane_datapath__open());
    ASSERT_NE(skel_, nullptr) << "membrane_datapath__open failed";
  }
  std::unique_ptr<membrane_datapath, SkelDeleter> skel_;
};

void expectMap(const bpf_map* map, const char* name, bpf_map_type type, uint32_t key_size,
               uint32_t value_size, uint32_t max_entries) {
  SCOPED_TRACE(name);
  EXPECT_EQ(std::string(bpf_map__name(map)), name);
  EXPECT_EQ(bpf_map__type(map), type);
  EXPECT_EQ(bpf_map__key_size(map), key_size);
  EXPECT_EQ(bpf_map__value_size(map), value_size);
  EXPECT_EQ(bpf_map__max_entries(map), max_entries);
  EXPECT_EQ(bpf_map__pin_path(map) == nullptr, false) << "must be LIBBPF_PIN_BY_NAME";
}

// The one encoder/decoder of identities in marks (bpf/shared/datapath.h):
// every identity the agent can hand out survives the round trip, and the
// magic nibble stays intact.
TEST(MarkLayout, IdentityRoundTrip) {
  for (uint32_t id : {0u, 1u, 2u, 255u, 256u, 4242u, 65535u, 65536u, 70000u, 0xFFFFFFu, 0x1000000u, 0x1000001u,
                      0x1ABCDEFu, MB_MARK_IDENTITY_MAX}) {
    for (uint32_t magic : {MB_MARK_MAGIC_IDENTITY, MB_MARK_MAGIC_PROXY_INGRESS, MB_MARK_MAGIC_PROXY_EGRESS}) {
      const uint32_t mark = mb_mark_encode(magic, id);
      EXPECT_EQ(mark & MB_MARK_MAGIC_MASK, magic) << id;
      EXPECT_EQ(mb_mark_identity(mark), id) << id;
    }
  }
  // Cilium's layout for 24-bit identities: low 16 bits on top, bits 16-23 at the bottom.
  EXPECT_EQ(mb_mark_encode(MB_MARK_MAGIC_PROXY_INGRESS, 0x123456), 0x34560A12u);
  EXPECT_EQ(mb_mark_encode(MB_MARK_MAGIC_PROXY_INGRESS, 0x1000001), 0x00011A00u);
}

TEST_F(DatapathLayoutTest, MapsMatchSharedHeader) {
  auto& m = skel_->maps;
  expectMap(m.mb_lxc_v1, MB_MAP_ENDPOINTS, BPF_MAP_TYPE_HASH, sizeof(uint32_t),
            sizeof(mb_endpoint_info), MB_ENDPOINTS_MAX);
  expectMap(m.mb_lxcip_v1, MB_MAP_ENDPOINTS_BY_IP, BPF_MAP_TYPE_HASH, sizeof(mb_endpoint_ip_key),
            sizeof(mb_endpoint_info), MB_ENDPOINTS_MAX);
  expectMap(m.mb_ipcache_v1, MB_MAP_IPCACHE, BPF_MAP_TYPE_LPM_TRIE, sizeof(mb_ipcache_key),
            sizeof(mb_remote_info), MB_IPCACHE_MAX);
  expectMap(m.mb_policy_v1, MB_MAP_POLICY, BPF_MAP_TYPE_PERCPU_HASH, sizeof(mb_policy_key),
            sizeof(mb_policy_value), MB_POLICY_MAX);
  expectMap(m.mb_ct4_v2, MB_MAP_CT, BPF_MAP_TYPE_LRU_HASH, sizeof(mb_ct_key), sizeof(mb_ct_entry),
            MB_CT_MAX);
  expectMap(m.mb_metrics_v1, MB_MAP_METRICS, BPF_MAP_TYPE_PERCPU_HASH, sizeof(mb_metrics_key),
            sizeof(mb_metrics_value), MB_METRICS_MAX);
  expectMap(m.mb_events_v1, MB_MAP_EVENTS, BPF_MAP_TYPE_RINGBUF, 0, 0, MB_EVENTS_BYTES);
  expectMap(m.mb_config_v1, MB_MAP_CONFIG, BPF_MAP_TYPE_ARRAY, sizeof(uint32_t),
            sizeof(mb_datapath_config), 1);
  expectMap(m.mb_svc_v1, MB_MAP_SERVICES, BPF_MAP_TYPE_HASH, sizeof(mb_service_key),
            sizeof(mb_service_info), MB_SERVICES_MAX);
  expectMap(m.mb_backend_v1, MB_MAP_BACKENDS, BPF_MAP_TYPE_HASH, sizeof(mb_backend_key),
            sizeof(mb_backend_info), MB_BACKENDS_MAX);
  expectMap(m.mb_revnat_v1, MB_MAP_REVNAT, BPF_MAP_TYPE_HASH, sizeof(uint16_t),
            sizeof(mb_revnat_info), MB_SERVICES_MAX);
}

TEST_F(DatapathLayoutTest, MapFlags) {
  EXPECT_EQ(bpf_map__map_flags(skel_->maps.mb_ipcache_v1), static_cast<uint32_t>(BPF_F_NO_PREALLOC));
  EXPECT_EQ(bpf_map__map_flags(skel_->maps.mb_policy_v1), static_cast<uint32_t>(BPF_F_NO_PREALLOC));
}

TEST_F(DatapathLayoutTest, ProgramsAreTcClassifiers) {
  EXPECT_EQ(bpf_program__type(skel_->progs.from_endpoint), BPF_PROG_TYPE_SCHED_CLS);
  EXPECT_EQ(bpf_program__type(skel_->progs.to_endpoint), BPF_PROG_TYPE_SCHED_CLS);
}

}  // namespace

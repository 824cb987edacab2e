// The fakes' states as text, one line per entry, for tests that compare a
// whole world before and after a call (EXPECT_EQ shows the differing lines).
// Deterministic: the fakes hand out ifindexes, MACs, pids and start times by
// rule, so two worlds built the same way describe the same.
#pragma once

#include <string>

#include "src/kernel/fake/fake_datapath_maps.h"
#include "src/kernel/fake/fake_pod_networks.h"
#include "src/kernel/fake/fake_process_runner.h"

namespace membrane::kernel {

std::string describe(const FakeDatapathMaps::State& s);
std::string describe(const FakePodNetworks::State& s);
std::string describe(const FakeProcessRunner::State& s);

// Drops every "created": <value> (a wall-clock time: equal within one world,
// not across worlds) from JSON text.
std::string withoutCreated(std::string text);

}  // namespace membrane::kernel

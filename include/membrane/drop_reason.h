// Drop reasons: Cilium's numeric codes and strings (pkg/monitor/api/drop.go).
// The datapath records codes (bpf/shared/datapath.h, enum mb_drop_reason);
// the exporter, monitor and CLI turn them into these strings. Unknown codes
// render as the number, as Cilium does.
#pragma once

#include <cstdint>
#include <string>

namespace membrane {

// Cilium's string for a drop reason code, e.g. 133 -> "Policy denied".
std::string dropReasonString(uint8_t code);

// A code is a drop (not a forward) when it is 2 or >= 130 (Cilium's rule).
constexpr bool isDropReason(uint8_t code) { return code == 2 || code >= 130; }

// "INGRESS", "EGRESS", "SERVICE", "UNKNOWN" (the `direction` label values).
const char* directionString(uint8_t dir);

}  // namespace membrane

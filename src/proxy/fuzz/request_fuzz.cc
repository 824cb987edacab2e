// libFuzzer target for the proxy's request path (build with -DMEMBRANE_FUZZ=ON
// and clang; run: build/bin/proxy_request_fuzz src/proxy/fuzz/corpus).
#include <cstddef>
#include <cstdint>

#include "src/proxy/fuzz/request_driver.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  membrane::proxy::driveRequestStream(data, size);
  return 0;
}

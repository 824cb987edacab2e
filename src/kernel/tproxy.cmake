# membrane_tproxy: the host plumbing (ip rule, local route, iptables TPROXY)
# that hands L7-redirected packets to membrane-proxy. docs/l7.md
add_library(membrane_tproxy STATIC ${CMAKE_CURRENT_LIST_DIR}/tproxy.cc)
target_include_directories(membrane_tproxy PUBLIC ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR})
target_link_libraries(membrane_tproxy PUBLIC membrane_common PRIVATE fmt::fmt)
# Root: real ip rules, routing table and iptables chain (check-then-add).
membrane_test(NAME tproxy_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/tproxy_test.cc
  LIBS membrane_tproxy fmt::fmt
  LABEL privileged)

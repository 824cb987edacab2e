# membrane_netlink: named network namespaces, veth pairs, addresses, routes
# and neighbours for pods (libnl-route-3). The only library that calls setns.
add_library(membrane_netlink STATIC
  ${CMAKE_CURRENT_LIST_DIR}/netns.cc
  ${CMAKE_CURRENT_LIST_DIR}/netlink.cc
  ${CMAKE_CURRENT_LIST_DIR}/pod_process.cc
  ${CMAKE_CURRENT_LIST_DIR}/pod_networks_linux.cc
  ${CMAKE_CURRENT_LIST_DIR}/process_runner_linux.cc)
target_include_directories(membrane_netlink PUBLIC ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR})
target_link_libraries(membrane_netlink
  PUBLIC membrane_common Threads::Threads
  PRIVATE PkgConfig::LIBNL)

# No root needed: names, validation, hashing.
membrane_test(NAME netlink_unit_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/netlink_unit_test.cc
  LIBS membrane_netlink
  LABEL unit)
# Root: real namespaces, links, routes and pings.
membrane_test(NAME netns_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/netns_test.cc
  LIBS membrane_netlink
  LABEL privileged)
membrane_test(NAME netlink_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/netlink_test.cc
  LIBS membrane_netlink
  LABEL privileged)

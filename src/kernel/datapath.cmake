# membrane_datapath: BPF loader, typed map access, ring buffer events.
# The only library that includes libbpf and the generated skeleton.
add_library(membrane_datapath STATIC
  ${CMAKE_CURRENT_LIST_DIR}/datapath.cc
  ${CMAKE_CURRENT_LIST_DIR}/events.cc)
target_include_directories(membrane_datapath PUBLIC ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR})
target_link_libraries(membrane_datapath
  PUBLIC membrane_common nlohmann_json::nlohmann_json
  PRIVATE membrane_bpf_skel PkgConfig::LIBBPF)

# Test/bench helper: Ethernet/IPv4/L4 frames with valid checksums.
add_library(membrane_packet_builder STATIC ${CMAKE_CURRENT_LIST_DIR}/packet_builder.cc)
target_include_directories(membrane_packet_builder PUBLIC ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR})

membrane_test(NAME datapath_layout_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/datapath_layout_test.cc
  LIBS membrane_datapath membrane_bpf_skel PkgConfig::LIBBPF
  LABEL unit)
membrane_test(NAME events_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/events_test.cc
  LIBS membrane_datapath membrane_packet_builder
  LABEL unit)
membrane_test(NAME datapath_bpf_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/datapath_bpf_test.cc
  LIBS membrane_datapath membrane_packet_builder PkgConfig::LIBBPF
  LABEL bpf)
membrane_test(NAME map_walk_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/map_walk_test.cc
  LABEL unit)

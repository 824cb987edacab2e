# Policy conformance suite (issue 3), included from tests/CMakeLists.txt:
# one membraned, 9 pods in namespaces x/y/z, every pair x port probed per case.
membrane_test(NAME conformance_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/conformance_test.cc ${CMAKE_CURRENT_LIST_DIR}/matrix.cc
  LIBS membrane_agent_fixture nlohmann_json::nlohmann_json fmt::fmt
  LABEL integration TIMEOUT 900)
if(TARGET membraned AND TARGET membrane)
  add_dependencies(conformance_test membraned membrane)
endif()

# The matrix / truth-table code on its own (no root).
membrane_test(NAME conformance_matrix_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/matrix_test.cc ${CMAKE_CURRENT_LIST_DIR}/matrix.cc
  LIBS fmt::fmt
  LABEL unit)

# The demo's story as an integration test (issue 5): scripts/demo.sh against an isolated membraned
# and a real Prometheus, every verdict, metric delta and dashboard/console query checked.
# Included from tests/CMakeLists.txt. Label integration (root: BPF, netns, L7 proxy); ~1.5 min.
find_program(MEMBRANE_PYTHON3 python3)
if(NOT MEMBRANE_PYTHON3)
  set(MEMBRANE_PYTHON3 python3)
endif()
get_filename_component(_demo_root ${CMAKE_CURRENT_LIST_DIR}/../.. ABSOLUTE)
add_test(NAME demo_story_test COMMAND ${MEMBRANE_TEST_LAUNCHER} ${MEMBRANE_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/demo_story_test.py)
set_tests_properties(demo_story_test PROPERTIES LABELS integration TIMEOUT 300 RUN_SERIAL ON
  SKIP_RETURN_CODE 77
  ENVIRONMENT "MEMBRANE_BUILD_DIR=${CMAKE_BINARY_DIR};MEMBRANE_SOURCE_DIR=${_demo_root};PYTHONDONTWRITEBYTECODE=1")
unset(_demo_root)

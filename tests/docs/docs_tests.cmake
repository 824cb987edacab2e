# Documentation checks (docs are part of the feature): pure file parsing, label unit.
# Included from tests/CMakeLists.txt.
find_program(MEMBRANE_DOCS_PYTHON3 python3)
if(NOT MEMBRANE_DOCS_PYTHON3)
  set(MEMBRANE_DOCS_PYTHON3 python3)
endif()
get_filename_component(_docs_root ${CMAKE_CURRENT_LIST_DIR}/../.. ABSOLUTE)
add_test(NAME docs_api_routes_test
  COMMAND ${MEMBRANE_DOCS_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/check_api_routes.py)
set_tests_properties(docs_api_routes_test PROPERTIES LABELS unit TIMEOUT 60
  ENVIRONMENT "MEMBRANE_SOURCE_DIR=${_docs_root};PYTHONDONTWRITEBYTECODE=1")
unset(_docs_root)

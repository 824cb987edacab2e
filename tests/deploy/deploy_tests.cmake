# Tests of the deployment files under deploy/ (Prometheus rules, console pages, Grafana dashboard,
# Kubernetes and systemd files). Included from tests/CMakeLists.txt:
#   include(${CMAKE_CURRENT_SOURCE_DIR}/deploy/deploy_tests.cmake)
# All are label `unit`: no root, loopback only; the console test starts one prometheus on
# 127.0.0.1:<random port> and stops it by PID (it also dies with the test process).
find_program(MEMBRANE_PROMTOOL promtool)
find_program(MEMBRANE_PYTHON3 python3)
if(NOT MEMBRANE_PROMTOOL)
  set(MEMBRANE_PROMTOOL promtool)  # fail visibly at test time: `make deps` installs prometheus
endif()
if(NOT MEMBRANE_PYTHON3)
  set(MEMBRANE_PYTHON3 python3)
endif()

# Paths from this file's location, so it works wherever it is included from.
set(_deploy_src ${CMAKE_CURRENT_LIST_DIR})
get_filename_component(_deploy_root ${CMAKE_CURRENT_LIST_DIR}/../.. ABSOLUTE)
set(_deploy_env "MEMBRANE_SOURCE_DIR=${_deploy_root};PYTHONDONTWRITEBYTECODE=1")

add_test(NAME deploy_alerts_check
  COMMAND ${MEMBRANE_PROMTOOL} check rules ${_deploy_root}/deploy/prometheus/alerts.yml)
add_test(NAME deploy_alerts_test
  COMMAND ${MEMBRANE_PROMTOOL} test rules alerts_test.yml
  WORKING_DIRECTORY ${_deploy_src})
add_test(NAME deploy_prometheus_config
  COMMAND ${MEMBRANE_PROMTOOL} check config ${_deploy_root}/deploy/prometheus/prometheus.yml)
add_test(NAME deploy_dashboard_test
  COMMAND ${MEMBRANE_PYTHON3} ${_deploy_src}/check_dashboard.py)
add_test(NAME deploy_console_test
  COMMAND ${MEMBRANE_PYTHON3} ${_deploy_src}/check_consoles.py)
add_test(NAME deploy_manifests_test
  COMMAND ${MEMBRANE_PYTHON3} ${_deploy_src}/check_manifests.py)

set_tests_properties(deploy_alerts_check deploy_alerts_test deploy_prometheus_config
  deploy_dashboard_test deploy_console_test deploy_manifests_test
  PROPERTIES LABELS unit TIMEOUT 120 ENVIRONMENT "${_deploy_env}")
unset(_deploy_src)
unset(_deploy_env)
unset(_deploy_root)

# membrane — the two commands a new user needs are `make demo` and `make test`.
# Both install what they need (Debian packages) first; run them as root.
SHELL := /bin/bash
BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
PREFIX ?= /usr/local

# Every build/run dependency, from Debian 12 (bookworm) packages only.
DEPS := build-essential cmake ninja-build pkg-config clang llvm libbpf-dev bpftool \
        libelf-dev zlib1g-dev libnl-3-dev libnl-route-3-dev prometheus-cpp-dev \
        libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev \
        libre2-dev node-llhttp libgtest-dev libgmock-dev googletest iproute2 iptables \
        iputils-ping curl netcat-openbsd python3 python3-yaml prometheus iperf3 libclang-rt-14-dev lld \
        libcurl4-openssl-dev etcd-server etcd-client

.PHONY: all deps lint build build-bins build-asan build-tsan test test-asan test-tsan test-unit test-sanitize demo demo-deps demo-stop install uninstall clean bench bench-convergence bench-l7 l7-vs-nginx

all: build

deps:
	@missing=$$(for p in $(DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root (needs apt-get install $$missing)"; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing || exit 1; \
	  if printf '%s\n' $$missing | grep -qx prometheus && [ -d /run/systemd/system ] && \
	     systemctl is-active -q prometheus 2>/dev/null; then \
	    echo "make deps: Debian started a system Prometheus service on :9090 with the package; membrane"; \
	    echo "  uses the package's binaries only (the demo runs its own on 127.0.0.1:9090): stopping and"; \
	    echo "  disabling prometheus.service (systemctl enable --now prometheus brings it back)"; \
	    systemctl disable --now -q prometheus; \
	  fi; \
	fi

$(BUILD)/build.ninja: CMakeLists.txt
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# Only the programs (what `make demo` and `make install` run): a first
# `make demo` skips the ~200 test and benchmark targets.
BINARIES := membraned membrane membrane-proxy membrane-cni
# Where CNI runtimes look for plugins and network configurations (Debian's
# containernetworking-plugins, podman and containerd's CRI plugin).
CNI_BIN_DIR ?= /usr/lib/cni
CNI_CONF_DIR ?= /etc/cni/net.d
build-bins: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS) --target $(BINARIES)

# `make test`: every tier (unit, bpf, privileged, integration, the demo story,
# bounded fuzzing) against an ASan+UBSan build of every binary, then the unit
# and integration tiers against a TSan build. Both builds use clang; a
# sanitizer report from any process a test starts fails that test
# (scripts/sanitizer-guard.sh). `make demo` and the benchmarks use the plain
# optimised build. One tier under one sanitizer: docs/testing.md.
SAN_CMAKE := -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
             -DCMAKE_C_FLAGS_DEBUG="-gline-tables-only -O1" -DCMAKE_CXX_FLAGS_DEBUG="-gline-tables-only -O1"
ASAN_BUILD ?= $(BUILD)-asan
TSAN_BUILD ?= $(BUILD)-tsan

test: deps
	$(MAKE) --no-print-directory test-asan
	$(MAKE) --no-print-directory test-tsan

build-asan: deps
	cmake -S . -B $(ASAN_BUILD) $(SAN_CMAKE) -DMEMBRANE_SANITIZE=address -DMEMBRANE_FUZZ=ON $(CMAKE_ARGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS)

build-tsan: deps
	cmake -S . -B $(TSAN_BUILD) $(SAN_CMAKE) -DMEMBRANE_SANITIZE=thread $(CMAKE_ARGS)
	cmake --build $(TSAN_BUILD) -j $(JOBS)

# TESTS=regex narrows either run (ctest -R), e.g. make test-asan TESTS=integration_l7_test
test-asan: build-asan
	scripts/run-tests.sh $(ASAN_BUILD) $(if $(TESTS),-R '$(TESTS)')

test-tsan: build-tsan
	scripts/run-tests.sh $(TSAN_BUILD) -L 'unit|integration' $(if $(TESTS),-R '$(TESTS)')

# clang-tidy with .clang-tidy over every membrane source (uses the plain build's
# compile_commands.json); any finding fails. ~10 min on 2 cores, so not in `make test`.
LINT_DEPS := clang-tidy
lint: build
	@$(MAKE) --no-print-directory deps DEPS="$(LINT_DEPS)"
	run-clang-tidy -quiet -p $(BUILD) -j $(JOBS) '$(CURDIR)/(src|tests|bench)/.*\.(cc|c)$$'

# The unit tier of the plain build under ASan+UBSan only (quick, no root).
test-sanitize: build-asan
	ctest --test-dir $(ASAN_BUILD) -L unit --output-on-failure -j $(JOBS)

test-unit: build
	ctest --test-dir $(BUILD) -L unit --output-on-failure -j $(JOBS)

# The seed's story with a real Prometheus, console dashboards and PNG snapshots (docs/deploy.md).
# Ports and dirs: MEMBRANE_DEMO_PROMETHEUS_PORT (9090), ... see the top of scripts/demo.sh.
demo: build-bins demo-deps
	scripts/demo.sh $(BUILD)

# Only `make demo` needs these: headless Chromium for the PNG snapshots of the console charts.
# `make test` does not install them (tests/demo skips its snapshot check without chromium).
DEMO_DEPS := chromium
demo-deps:
	@$(MAKE) --no-print-directory deps DEPS="$(DEMO_DEPS)"

demo-stop:
	scripts/demo.sh --stop $(BUILD)

bench: build
	bench/datapath/run.sh $(BUILD)

# Policy convergence: 500 endpoints, 250 policies (docs/benchmarks.md); needs root, a few minutes.
bench-convergence: build
	python3 bench/convergence/run.py --build $(BUILD)

# L7 path vs direct vs nginx reverse proxy (docs/benchmarks.md). Bench-only Debian packages:
BENCH_L7_DEPS := wrk nginx-light
bench-l7: build
	@$(MAKE) --no-print-directory deps DEPS="$(BENCH_L7_DEPS)"
	bench/l7/run.sh $(BUILD) --half-load

# The L7 adversarial vectors through nginx as a reverse proxy with equivalent
# location rules, side by side with membrane's verdicts (docs/l7.md, "Against
# nginx"); writes $(BUILD)/l7-vs-nginx.md. Loopback only, about a minute.
l7-vs-nginx: build
	@$(MAKE) --no-print-directory deps DEPS="nginx-light"
	MEMBRANE_L7_NGINX=$(CURDIR)/$(BUILD)/l7-vs-nginx.md MEMBRANE_BUILD_DIR=$(CURDIR)/$(BUILD) MEMBRANE_SOURCE_DIR=$(CURDIR) \
	  $(BUILD)/tests/integration_l7_adversarial_test --gtest_filter='L7AdversarialVersusNginx.*'
	@echo "written: $(BUILD)/l7-vs-nginx.md"

install: build-bins
	install -D -m 0755 $(BUILD)/bin/membraned $(DESTDIR)$(PREFIX)/bin/membraned
	install -D -m 0755 $(BUILD)/bin/membrane $(DESTDIR)$(PREFIX)/bin/membrane
	install -D -m 0755 $(BUILD)/bin/membrane-proxy $(DESTDIR)$(PREFIX)/bin/membrane-proxy
	install -D -m 0644 examples/starwars/deathstar.py $(DESTDIR)$(PREFIX)/share/membrane/deathstar.py
	@if [ -f deploy/systemd/membraned.service ]; then \
	  install -D -m 0644 deploy/systemd/membraned.service $(DESTDIR)/etc/systemd/system/membraned.service; fi
	install -D -m 0755 $(BUILD)/bin/membrane-cni $(DESTDIR)$(CNI_BIN_DIR)/membrane-cni
	@# The network configuration is the administrator's once installed: never overwritten (docs/cni.md).
	@if [ -e $(DESTDIR)$(CNI_CONF_DIR)/10-membrane.conflist ]; then \
	  echo "keeping $(DESTDIR)$(CNI_CONF_DIR)/10-membrane.conflist (the example is deploy/cni/10-membrane.conflist)"; \
	else install -D -m 0644 deploy/cni/10-membrane.conflist $(DESTDIR)$(CNI_CONF_DIR)/10-membrane.conflist; fi

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/membraned $(DESTDIR)$(PREFIX)/bin/membrane $(DESTDIR)$(PREFIX)/bin/membrane-proxy $(DESTDIR)$(PREFIX)/share/membrane/deathstar.py $(DESTDIR)/etc/systemd/system/membraned.service
	rm -f $(DESTDIR)$(CNI_BIN_DIR)/membrane-cni
	@# Removed only when unchanged from the example (an edited configuration is the administrator's).
	@if cmp -s deploy/cni/10-membrane.conflist $(DESTDIR)$(CNI_CONF_DIR)/10-membrane.conflist; then \
	  rm -f $(DESTDIR)$(CNI_CONF_DIR)/10-membrane.conflist; fi

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD)

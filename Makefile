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
        iputils-ping curl netcat-openbsd python3 python3-yaml prometheus iperf3 libclang-rt-14-dev

.PHONY: all deps build test test-unit test-sanitize demo demo-deps demo-stop install uninstall clean bench bench-convergence bench-l7

all: build

deps:
	@missing=$$(for p in $(DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root (needs apt-get install $$missing)"; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BUILD)/build.ninja: CMakeLists.txt
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# Every test tier: unit, bpf, privileged, integration (the last three need root),
# then the unit tier again under AddressSanitizer + UndefinedBehaviorSanitizer.
test: build
	scripts/run-tests.sh $(BUILD)
	$(MAKE) test-sanitize

test-sanitize: deps
	cmake -S . -B $(BUILD)-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DMEMBRANE_SANITIZE=ON $(CMAKE_ARGS)
	cmake --build $(BUILD)-asan -j $(JOBS) --target membrane_unit_tests
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  ctest --test-dir $(BUILD)-asan -L unit --output-on-failure -j $(JOBS)

test-unit: build
	ctest --test-dir $(BUILD) -L unit --output-on-failure -j $(JOBS)

# The seed's story with a real Prometheus, console dashboards and PNG snapshots (docs/deploy.md).
# Ports and dirs: MEMBRANE_DEMO_PROMETHEUS_PORT (9090), ... see the top of scripts/demo.sh.
demo: build demo-deps
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

install: build
	install -D -m 0755 $(BUILD)/bin/membraned $(DESTDIR)$(PREFIX)/bin/membraned
	install -D -m 0755 $(BUILD)/bin/membrane $(DESTDIR)$(PREFIX)/bin/membrane
	install -D -m 0755 $(BUILD)/bin/membrane-proxy $(DESTDIR)$(PREFIX)/bin/membrane-proxy
	install -D -m 0644 examples/starwars/deathstar.py $(DESTDIR)$(PREFIX)/share/membrane/deathstar.py
	@if [ -f deploy/systemd/membraned.service ]; then \
	  install -D -m 0644 deploy/systemd/membraned.service $(DESTDIR)/etc/systemd/system/membraned.service; fi

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/membraned $(DESTDIR)$(PREFIX)/bin/membrane $(DESTDIR)$(PREFIX)/bin/membrane-proxy $(DESTDIR)$(PREFIX)/share/membrane/deathstar.py $(DESTDIR)/etc/systemd/system/membraned.service

clean:
	rm -rf $(BUILD) $(BUILD)-asan

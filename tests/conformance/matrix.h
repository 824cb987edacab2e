// Reachability matrices for the policy conformance suite: the expected one is
// computed from a small predicate over flows (never by running the engine),
// the observed one is filled from probe results, and a mismatch is printed as
// Kubernetes e2e style truth tables (rows = from, cols = to, '.' allowed,
// 'X' denied) with the differing cells marked.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace membrane::testing::conformance {

// A pod as the tables show it: short namespace ("x") and pod ("a").
struct PodName {
  std::string ns, pod;
  std::string str() const { return ns + "/" + pod; }
  // pattern: "x/a", "x/*", "*/a" or "*" (everything).
  bool is(std::string_view pattern) const;
  bool operator<(const PodName& o) const { return std::tie(ns, pod) < std::tie(o.ns, o.pod); }
  bool operator==(const PodName& o) const { return ns == o.ns && pod == o.pod; }
};

// One probe: from a pod to a pod on a port ("tcp/80", "udp/81", "icmp").
struct Flow {
  PodName from, to;
  std::string port;
  bool fromIs(std::string_view pattern) const { return from.is(pattern); }
  bool toIs(std::string_view pattern) const { return to.is(pattern); }
  // pattern: "tcp/80", "tcp/*", "*/80", "icmp" or "*".
  bool on(std::string_view pattern) const;
};

// The expectation DSL: true when the flow must be answered.
using Expectation = std::function<bool(const Flow&)>;

class Matrix {
 public:
  Matrix(std::vector<PodName> pods, std::vector<std::string> ports);

  // Computes the expected matrix. A pod's traffic to its own address never
  // leaves its network namespace (the kernel delivers it on loopback, before
  // any datapath hook, as in Cilium), so self cells are always allowed.
  static Matrix expected(std::vector<PodName> pods, std::vector<std::string> ports, const Expectation& allowed);

  void set(const PodName& from, const PodName& to, const std::string& port, bool allowed);
  bool get(const PodName& from, const PodName& to, const std::string& port) const;
  bool has(const PodName& from, const PodName& to, const std::string& port) const;

  const std::vector<PodName>& pods() const { return pods_; }
  const std::vector<std::string>& ports() const { return ports_; }
  // Cells that differ from `other` (same pods and ports).
  std::vector<Flow> diff(const Matrix& other) const;
  size_t countDenied() const;

  // One truth table for one port.
  std::string truthTable(const std::string& port) const;
  // For every port with a difference: expected, observed and a comparison
  // table ('.' same, 'X' differs), as the Kubernetes e2e netpol framework prints.
  static std::string explain(const Matrix& expected, const Matrix& observed);

 private:
  using Key = std::tuple<PodName, PodName, std::string>;
  std::vector<PodName> pods_;
  std::vector<std::string> ports_;
  std::map<Key, bool> cells_;
};

}  // namespace membrane::testing::conformance

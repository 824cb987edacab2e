#include "tests/conformance/matrix.h"

#include <fmt/format.h>

namespace membrane::testing::conformance {
namespace {
bool globPart(std::string_view pattern, std::string_view value) { return pattern == "*" || pattern == value; }

// Splits "a/b" into {"a","b"}; "*" into {"*","*"}.
std::pair<std::string_view, std::string_view> split(std::string_view pattern) {
  if (pattern == "*") return {"*", "*"};
  auto slash = pattern.find('/');
  if (slash == std::string_view::npos) return {pattern, ""};
  return {pattern.substr(0, slash), pattern.substr(slash + 1)};
}
}  // namespace

bool PodName::is(std::string_view pattern) const {
  auto [n, p] = split(pattern);
  return globPart(n, ns) && globPart(p, pod);
}

bool Flow::on(std::string_view pattern) const {
  if (pattern == "*") return true;
  auto [proto, number] = split(pattern);
  auto [pp, pn] = split(port);
  return globPart(proto, pp) && (number.empty() ? pn.empty() : globPart(number, pn));
}

Matrix::Matrix(std::vector<PodName> pods, std::vector<std::string> ports)
    : pods_(std::move(pods)), ports_(std::move(ports)) {}

Matrix Matrix::expected(std::vector<PodName> pods, std::vector<std::string> ports, const Expectation& allowed) {
  Matrix m(std::move(pods), std::move(ports));
  for (const auto& port : m.ports_)
    for (const auto& from : m.pods_)
      for (const auto& to : m.pods_) m.set(from, to, port, from == to || allowed(Flow{from, to, port}));
  return m;
}

void Matrix::set(const PodName& from, const PodName& to, const std::string& port, bool allowed) {
  cells_[{from, to, port}] = allowed;
}

bool Matrix::has(const PodName& from, const PodName& to, const std::string& port) const {
  return cells_.count({from, to, port}) != 0;
}

bool Matrix::get(const PodName& from, const PodName& to, const std::string& port) const {
  auto it = cells_.find({from, to, port});
  return it != cells_.end() && it->second;
}

std::vector<Flow> Matrix::diff(const Matrix& other) const {
  std::vector<Flow> out;
  for (const auto& port : ports_)
    for (const auto& from : pods_)
      for (const auto& to : pods_)
        if (get(from, to, port) != other.get(from, to, port) || has(from, to, port) != other.has(from, to, port))
          out.push_back(Flow{from, to, port});
  return out;
}

size_t Matrix::countDenied() const {
  size_t n = 0;
  for (const auto& [k, v] : cells_) n += v ? 0 : 1;
  return n;
}

namespace {
// cell(from, to) -> one character.
template <typename F>
std::string table(const std::string& title, const std::vector<PodName>& pods, F cell) {
  std::string out = title + "\n";
  out += fmt::format("{:<6}", "");
  for (const auto& to : pods) out += fmt::format("{:<4}", to.str());
  out += "\n";
  for (const auto& from : pods) {
    out += fmt::format("{:<6}", from.str());
    for (const auto& to : pods) out += fmt::format("{:<4}", cell(from, to));
    out += "\n";
  }
  return out;
}
}  // namespace

std::string Matrix::truthTable(const std::string& port) const {
  return table(port + " (rows = from, cols = to; . allowed, X denied)", pods_, [&](const PodName& f, const PodName& t) {
    if (!has(f, t, port)) return std::string("?");
    return std::string(get(f, t, port) ? "." : "X");
  });
}

std::string Matrix::explain(const Matrix& expected, const Matrix& observed) {
  std::string out;
  for (const auto& port : expected.ports_) {
    bool differs = false;
    for (const auto& f : expected.pods_)
      for (const auto& t : expected.pods_)
        differs = differs || expected.get(f, t, port) != observed.get(f, t, port) || !observed.has(f, t, port);
    if (!differs) continue;
    out += "Expected " + expected.truthTable(port);
    out += "Observed " + observed.truthTable(port);
    out += table("Comparison " + port + " (. same, X differs)", expected.pods_, [&](const PodName& f, const PodName& t) {
      bool same = observed.has(f, t, port) && expected.get(f, t, port) == observed.get(f, t, port);
      return std::string(same ? "." : "X");
    });
    out += "\n";
  }
  return out;
}

}  // namespace membrane::testing::conformance

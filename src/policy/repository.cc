#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "membrane/policy_repository.h"

namespace membrane::policy {

namespace {
}  // namespace

std::string policyKey(const Policy& p) {
  return fmt::format("{}/{}/{}", kindName(p.kind), p.namespace_name, p.name);
}

Result<ImportResult> Repository::import(std::vector<Policy> policies) {
  if (policies.empty()) return Error::invalid("import: no policies given");
  std::set<std::string> seen;
  for (const auto& p : policies) {
    if (p.name.empty()) return Error::invalid("import: a policy has no name");
    if (!seen.insert(policyKey(p)).second)
      return Error::invalid(fmt::format("import: {} {} is given twice", kindName(p.kind), p.displayName()));
  }
  ImportResult res;
  for (auto& p : policies) {
    const std::string key = policyKey(p);
    auto c = cookie_by_key_.find(key);
    if (c == cookie_by_key_.end()) {
      // Cookies are never reused so that an event carrying an old cookie
      // still names the policy that produced it.
      while (next_cookie_ == 0 || name_by_cookie_.count(next_cookie_)) ++next_cookie_;
      c = cookie_by_key_.emplace(key, next_cookie_++).first;
      name_by_cookie_[c->second] = p.displayName();
    }
    p.cookie = c->second;
    res.names.push_back(p.displayName());
    auto same = [&](const Policy& q) { return policyKey(q) == key; };
    auto it = std::find_if(policies_.begin(), policies_.end(), same);
    if (it != policies_.end()) *it = std::move(p);
    else policies_.push_back(std::move(p));
  }
  res.revision = ++revision_;
  return res;
}

Result<std::vector<std::string>> Repository::remove(const std::string& name, const std::string& namespace_name) {
  std::vector<std::string> removed;
  auto it = std::remove_if(policies_.begin(), policies_.end(), [&](const Policy& p) {
    if (p.name != name || p.namespace_name != namespace_name) return false;
    removed.push_back(p.displayName());
    return true;
  });
  if (removed.empty()) {
    return Error::notFound(namespace_name.empty()
                               ? fmt::format("policy {} not found", name)
                               : fmt::format("policy {}/{} not found", namespace_name, name));
  }
  policies_.erase(it, policies_.end());
  ++revision_;
  return removed;
}

Result<std::vector<std::string>> Repository::removeByLabels(const labels::LabelSet& wanted) {
  if (wanted.empty()) return Error::invalid("delete policies by labels: no label given");
  auto matches = [&](const Policy& p) {
    for (const auto& w : wanted) {
      bool found = false;
      if (w.source == labels::kSourceK8s || w.source == "any") {
        for (const auto* l : p.labels.findAnySource(w.key)) found = found || l->value == w.value;
      } else if (const auto* l = p.labels.find(w.source, w.key)) {
        found = l->value == w.value;
      }
      if (!found) return false;
    }
    return true;
  };
  std::vector<std::string> removed;
  auto it = std::remove_if(policies_.begin(), policies_.end(), [&](const Policy& p) {
    if (!matches(p)) return false;
    removed.push_back(p.displayName());
    return true;
  });
  if (removed.empty())
    return Error::notFound(fmt::format("no policy has the labels {} (see 'membrane policy get')", wanted.toString()));
  policies_.erase(it, policies_.end());
  ++revision_;
  return removed;
}

std::vector<std::string> Repository::removeAll() {
  std::vector<std::string> removed;
  for (const auto& p : policies_) removed.push_back(p.displayName());
  policies_.clear();
  if (!removed.empty()) ++revision_;
  return removed;
}

Status Repository::reserveCookie(const std::string& key, uint32_t cookie) {
  const std::string what = fmt::format("reserve cookie {} for {}", cookie, key);
  if (cookie == 0) return Error::invalid(what + ": cookie 0 means \"no policy\"");
  const size_t a = key.find('/');
  const size_t b = a == std::string::npos ? std::string::npos : key.find('/', a + 1);
  if (a == 0 || b == std::string::npos || b + 1 == key.size() || key.find('/', b + 1) != std::string::npos)
    return Error::invalid(what + ": the key must be Kind/namespace/name");
  if (auto it = cookie_by_key_.find(key); it != cookie_by_key_.end()) {
    if (it->second == cookie) return okStatus();
    return Error::exists(fmt::format("{}: the policy has cookie {}", what, it->second));
  }
  if (auto it = name_by_cookie_.find(cookie); it != name_by_cookie_.end())
    return Error::exists(fmt::format("{}: the cookie belongs to {}", what, it->second));
  const std::string ns = key.substr(a + 1, b - a - 1), name = key.substr(b + 1);
  cookie_by_key_.emplace(key, cookie);
  name_by_cookie_.emplace(cookie, ns.empty() ? name : ns + "/" + name);
  return okStatus();
}

std::string Repository::policyForCookie(uint32_t cookie) const {
  auto it = name_by_cookie_.find(cookie);
  return it == name_by_cookie_.end() ? std::string() : it->second;
}

std::vector<std::string> Repository::selectingPolicies(const labels::LabelSet& subject) const {
  std::vector<std::string> out;
  for (const auto& p : policies_) {
    bool selects = std::any_of(p.rules.begin(), p.rules.end(),
                               [&](const Rule& r) { return r.endpoint_selector.matches(subject); });
    if (selects) out.push_back(p.displayName());
  }
  return out;
}

}  // namespace membrane::policy

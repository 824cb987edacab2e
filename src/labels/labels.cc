#include "membrane/labels.h"

#include <arpa/inet.h>

#include <algorithm>

#include <fmt/format.h>

namespace membrane::labels {

namespace {

bool isAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
bool isNameChar(char c) { return isAlnum(c) || c == '-' || c == '_' || c == '.'; }

// Kubernetes "qualified name" part / label value: <=63, [A-Za-z0-9._-], alnum at both ends.
Status validateName(std::string_view what, std::string_view s, bool allow_empty) {
  if (s.empty()) {
    if (allow_empty) return okStatus();
    return Error::invalid(fmt::format("{} must not be empty", what));
  }
  if (s.size() > 63)
    return Error::invalid(fmt::format("{} '{}' must be no more than 63 characters", what, s));
  if (!std::all_of(s.begin(), s.end(), isNameChar))
    return Error::invalid(fmt::format("{} '{}' must consist of alphanumerics, '-', '_' or '.'", what, s));
  if (!isAlnum(s.front()) || !isAlnum(s.back()))
    return Error::invalid(fmt::format("{} '{}' must start and end with an alphanumeric character", what, s));
  return okStatus();
}

// DNS-1123 subdomain: <=253, lowercase alphanumerics, '-' and '.', alnum at both ends.
Status validatePrefix(std::string_view p) {
  if (p.empty()) return Error::invalid("key prefix must not be empty (remove the '/')");
  if (p.size() > 253)
    return Error::invalid(fmt::format("key prefix '{}' must be no more than 253 characters", p));
  auto lower_alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  for (char c : p) {
    if (!lower_alnum(c) && c != '-' && c != '.')
      return Error::invalid(fmt::format(
          "key prefix '{}' must be a DNS subdomain (lowercase alphanumerics, '-' or '.')", p));
  }
  if (!lower_alnum(p.front()) || !lower_alnum(p.back()))
    return Error::invalid(
        fmt::format("key prefix '{}' must start and end with a lowercase alphanumeric character", p));
  return okStatus();
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool lessKey(const Label& a, std::string_view source, std::string_view key) {
  std::string_view as = a.source, ak = a.key;
  return std::tie(as, ak) < std::tie(source, key);
}

}  // namespace

std::string Label::toString() const {
  if (value.empty()) return source + ":" + key;
  return source + ":" + key + "=" + value;
}

LabelSet::LabelSet(std::vector<Label> labels) {
  for (auto& l : labels) add(std::move(l));
}

void LabelSet::add(Label label) {
  auto it = std::lower_bound(labels_.begin(), labels_.end(), label,
                             [](const Label& a, const Label& b) { return lessKey(a, b.source, b.key); });
  if (it != labels_.end() && it->source == label.source && it->key == label.key) {
    it->value = std::move(label.value);
    return;
  }
  labels_.insert(it, std::move(label));
}

bool LabelSet::remove(std::string_view source, std::string_view key) {
  auto it = std::lower_bound(labels_.begin(), labels_.end(), 0,
                             [&](const Label& a, int) { return lessKey(a, source, key); });
  if (it == labels_.end() || it->source != source || it->key != key) return false;
  labels_.erase(it);
  return true;
}

const Label* LabelSet::find(std::string_view source, std::string_view key) const {
  auto it = std::lower_bound(labels_.begin(), labels_.end(), 0,
                             [&](const Label& a, int) { return lessKey(a, source, key); });
  if (it == labels_.end() || it->source != source || it->key != key) return nullptr;
  return &*it;
}

std::vector<const Label*> LabelSet::findAnySource(std::string_view key) const {
  std::vector<const Label*> out;
  for (const auto& l : labels_)
    if (l.key == key) out.push_back(&l);
  return out;
}

bool LabelSet::hasSource(std::string_view source) const {
  return std::any_of(labels_.begin(), labels_.end(), [&](const Label& l) { return l.source == source; });
}

std::string LabelSet::toString() const {
  std::string out;
  for (const auto& l : labels_) {
    if (!out.empty()) out += ',';
    out += l.toString();
  }
  return out;
}

Status validateKey(std::string_view key) {
  if (key.empty()) return Error::invalid("key must not be empty");
  auto slash = key.find('/');
  if (slash != std::string_view::npos) {
    MB_TRY(validatePrefix(key.substr(0, slash)));
    auto name = key.substr(slash + 1);
    if (name.find('/') != std::string_view::npos)
      return Error::invalid(fmt::format("key '{}' must contain at most one '/'", key));
    return validateName("key name", name, false);
  }
  return validateName("key", key, false);
}

Status validateValue(std::string_view value) { return validateName("value", value, true); }

Result<Label> parseLabel(std::string_view text, std::string_view default_source) {
  std::string_view rest = trim(text);
  auto fail = [&](const Error& e) { return e.wrap(fmt::format("label '{}'", trim(text))); };
  if (rest.empty()) return fail(Error::invalid("empty label"));
  std::string source(default_source);
  // Kubernetes keys never contain ':', so a ':' before '=' introduces a source.
  auto colon = rest.find(':');
  auto eq = rest.find('=');
  if (colon != std::string_view::npos && (eq == std::string_view::npos || colon < eq)) {
    source = std::string(rest.substr(0, colon));
    rest.remove_prefix(colon + 1);
    if (source.empty()) return fail(Error::invalid("source before ':' must not be empty"));
    if (!std::all_of(source.begin(), source.end(), [](char c) { return isAlnum(c) || c == '-'; }))
      return fail(Error::invalid(fmt::format("source '{}' must consist of alphanumerics or '-'", source)));
    eq = rest.find('=');
  }
  std::string_view key = eq == std::string_view::npos ? rest : rest.substr(0, eq);
  std::string_view value = eq == std::string_view::npos ? std::string_view() : rest.substr(eq + 1);
  if (auto s = validateKey(key); !s) return fail(s.error());
  if (auto s = validateValue(value); !s) return fail(s.error());
  return Label{std::move(source), std::string(key), std::string(value)};
}

Result<LabelSet> parseLabels(std::string_view text, std::string_view default_source) {
  LabelSet set;
  if (trim(text).empty()) return set;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    auto item = text.substr(start, comma - start);
    MB_ASSIGN(Label l, parseLabel(item, default_source));
    if (set.find(l.source, l.key) != nullptr)
      return Error::invalid(fmt::format("label '{}': key '{}' given twice", trim(item), l.key));
    set.add(std::move(l));
    start = comma + 1;
  }
  return set;
}

LabelSet endpointLabels(std::string_view namespace_name, const LabelSet& user_labels, const LabelSet& ns_labels) {
  LabelSet out;
  for (const auto& l : user_labels) {
    Label copy = l;
    if (copy.source.empty() || copy.source == kSourceUnspec || copy.source == kSourceAny)
      copy.source = std::string(kSourceK8s);
    out.add(std::move(copy));
  }
  out.add(kSourceK8s, kPodNamespaceLabel, namespace_name);
  out.add(kSourceK8s, kPolicyClusterLabel, kClusterName);
  if (!out.find(kSourceK8s, kPolicyServiceAccountLabel)) out.add(kSourceK8s, kPolicyServiceAccountLabel, kDefaultServiceAccount);
  const std::string prefix(kNamespaceLabelsPrefix);
  for (const auto& l : ns_labels) out.add(kSourceK8s, prefix + l.key, l.value);
  // Last: the namespace's name label cannot be overridden by a user label.
  out.add(kSourceK8s, prefix + std::string(kNamespaceNameLabel), namespace_name);
  return out;
}

LabelSet endpointLabels(std::string_view namespace_name, const LabelSet& user_labels) {
  return endpointLabels(namespace_name, user_labels, LabelSet());
}

Label cidrLabel(std::string_view prefix) { return Label{std::string(kSourceCidr), std::string(prefix), ""}; }

LabelSet cidrIdentityLabels(const std::string& prefix) {
  LabelSet out;
  out.add(kSourceReserved, reservedName(Reserved::World), "");
  auto slash = prefix.find('/');
  if (slash == std::string::npos) return out;
  const std::string addr = prefix.substr(0, slash);
  const std::string len_text = prefix.substr(slash + 1);
  if (len_text.empty() || len_text.size() > 2 ||
      !std::all_of(len_text.begin(), len_text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return out;
  const int len = std::stoi(len_text);
  in_addr a{};
  if (len > 32 || inet_pton(AF_INET, addr.c_str(), &a) != 1) return out;
  const uint32_t host = ntohl(a.s_addr);
  for (int l = 0; l <= len; ++l) {
    const uint32_t mask = l == 0 ? 0 : ~uint32_t{0} << (32 - l);
    const uint32_t net = host & mask;
    out.add(cidrLabel(fmt::format("{}.{}.{}.{}/{}", net >> 24, (net >> 16) & 0xff, (net >> 8) & 0xff, net & 0xff, l)));
  }
  return out;
}

std::string_view reservedName(Reserved r) {
  switch (r) {
    case Reserved::Host: return "host";
    case Reserved::World: return "world";
    case Reserved::Unmanaged: return "unmanaged";
    case Reserved::Health: return "health";
    case Reserved::Init: return "init";
    case Reserved::RemoteNode: return "remote-node";
    case Reserved::KubeApiserver: return "kube-apiserver";
  }
  return "unknown";
}

LabelSet reservedLabels(Reserved r) {
  LabelSet s;
  s.add(kSourceReserved, reservedName(r), "");
  return s;
}

std::optional<Reserved> reservedFor(const LabelSet& labels) {
  for (Reserved r : kAllReserved)
    if (labels == reservedLabels(r)) return r;
  return std::nullopt;
}

}  // namespace membrane::labels

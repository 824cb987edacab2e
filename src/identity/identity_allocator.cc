#include <fmt/format.h>

#include "membrane/identity.h"

namespace membrane::identity {

using labels::LabelSet;

IdentityAllocator::IdentityAllocator(uint32_t min_id, uint32_t max_id) : min_id_(min_id), max_id_(max_id) {
  MB_CHECK(min_id >= kMinAllocated && min_id <= max_id);
  for (auto r : labels::kAllReserved) reserved_[static_cast<uint32_t>(r)] = labels::reservedLabels(r);
}

std::optional<uint32_t> IdentityAllocator::lowestFree() const {
  // by_id_ is ordered: the first gap in [min_id_, ...] is the lowest free number.
  uint32_t candidate = min_id_;
  for (const auto& [id, entry] : by_id_) {
    if (id > candidate) break;
    if (id == candidate) {
      if (candidate == max_id_) return std::nullopt;
      ++candidate;
    }
  }
  if (candidate > max_id_) return std::nullopt;
  return candidate;
}

Result<Identity> IdentityAllocator::allocate(const LabelSet& labels) {
  if (labels.empty()) return Error::invalid("allocate identity: empty label set");
  if (auto r = labels::reservedFor(labels))
    return Identity{static_cast<uint32_t>(*r), labels, 0, true};
  if (auto it = by_labels_.find(labels); it != by_labels_.end()) {
    Entry& e = by_id_.at(it->second);
    ++e.refs;
    return Identity{it->second, e.labels, e.refs, false};
  }
  auto id = lowestFree();
  if (!id)
    return Error(ENOSPC, fmt::format("allocate identity for {}: all identities {}-{} are in use",
                                     labels.toString(), min_id_, max_id_));
  by_id_[*id] = Entry{labels, 1};
  by_labels_[labels] = *id;
  return Identity{*id, labels, 1, false};
}

bool IdentityAllocator::release(uint32_t id) {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return false;
  if (--it->second.refs == 0) {
    by_labels_.erase(it->second.labels);
    by_id_.erase(it);
  }
  return true;
}

Status IdentityAllocator::restore(uint32_t id, const LabelSet& labels) {
  if (id < min_id_ || id > max_id_)
    return Error::invalid(fmt::format("restore identity {}: outside the allocation range {}-{}", id, min_id_, max_id_));
  if (labels.empty()) return Error::invalid(fmt::format("restore identity {}: empty label set", id));
  auto by_id = by_id_.find(id);
  auto by_labels = by_labels_.find(labels);
  if (by_id != by_id_.end() && by_id->second.labels != labels)
    return Error::exists(fmt::format("restore identity {} for {}: already used by {}", id, labels.toString(),
                                     by_id->second.labels.toString()));
  if (by_labels != by_labels_.end() && by_labels->second != id)
    return Error::exists(fmt::format("restore identity {} for {}: these labels already have identity {}", id,
                                     labels.toString(), by_labels->second));
  if (by_id != by_id_.end()) {
    ++by_id->second.refs;
    return okStatus();
  }
  by_id_[id] = Entry{labels, 1};
  by_labels_[labels] = id;
  return okStatus();
}

std::optional<Identity> IdentityAllocator::lookup(uint32_t id) const {
  if (auto r = reserved_.find(id); r != reserved_.end()) return Identity{id, r->second, 0, true};
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return std::nullopt;
  return Identity{id, it->second.labels, it->second.refs, false};
}

std::optional<Identity> IdentityAllocator::lookup(const LabelSet& labels) const {
  if (auto r = labels::reservedFor(labels)) return lookup(static_cast<uint32_t>(*r));
  auto it = by_labels_.find(labels);
  if (it == by_labels_.end()) return std::nullopt;
  return lookup(it->second);
}

std::vector<Identity> IdentityAllocator::list() const {
  std::vector<Identity> out;
  out.reserve(reserved_.size() + by_id_.size());
  for (const auto& [id, l] : reserved_) out.push_back(Identity{id, l, 0, true});
  for (const auto& [id, e] : by_id_) out.push_back(Identity{id, e.labels, e.refs, false});
  return out;
}

std::vector<IdentityRef> IdentityAllocator::refs() const {
  std::vector<IdentityRef> out;
  out.reserve(reserved_.size() + by_id_.size());
  for (const auto& [id, l] : reserved_) out.push_back(IdentityRef{id, &l});
  for (const auto& [id, e] : by_id_) out.push_back(IdentityRef{id, &e.labels});
  return out;
}

}  // namespace membrane::identity

// Diagnostics and the typed readers (mapping with known fields, list,
// string, boolean) every part of the policy parser uses.
#include <fmt/format.h>

#include "src/policy/parser_internal.h"

namespace membrane::policy::detail {

void Parser::error(const YAML::Node& at, const std::string& path, std::string message) {
  Diagnostic d;
  d.file = file_;
  const YAML::Mark m = at.Mark();
  d.line = m.line >= 0 ? m.line + 1 : 0;
  d.column = m.column >= 0 ? m.column + 1 : 0;
  d.path = path;
  d.message = std::move(message);
  diags_.push_back(std::move(d));
}

void Parser::syntaxError(int line, int column, std::string message) {
  diags_.push_back(Diagnostic{file_, line + 1, column + 1, "", std::move(message)});
}

std::optional<Fields> Parser::fields(const YAML::Node& n, const std::string& path, const ObjectSpec& spec) {
  static const std::vector<std::string_view> kNone;
  return yaml_fields::checkFields(n, path, {spec.known, kNone, spec.unsupported},
                                  [this](const YAML::Node& at, const std::string& p, std::string msg) {
                                    error(at, p, std::move(msg));
                                  });
}

bool Parser::isList(const YAML::Node& n, const std::string& path) {
  if (n.IsNull() || n.IsSequence()) return true;
  error(n, path, fmt::format("expected a list, got {}", typeName(n)));
  return false;
}

std::optional<std::string> Parser::string(const YAML::Node& n, const std::string& path) {
  if (n.IsScalar()) return n.Scalar();
  error(n, path, fmt::format("expected a string, got {}", typeName(n)));
  return std::nullopt;
}

std::optional<bool> Parser::boolean(const YAML::Node& n, const std::string& path) {
  if (n.IsScalar() && (n.Scalar() == "true" || n.Scalar() == "false")) return n.Scalar() == "true";
  error(n, path,
        n.IsScalar() ? fmt::format("expected true or false, got '{}'", n.Scalar())
                     : fmt::format("expected true or false, got {}", typeName(n)));
  return std::nullopt;
}

}  // namespace membrane::policy::detail

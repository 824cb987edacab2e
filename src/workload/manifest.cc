// Manifest parser: documents are split at `---` lines and each is loaded on
// its own, padded with the newlines before it, so yaml-cpp's marks are the
// file's lines. Policy documents go to the policy parser unchanged (same
// positions); the kinds of this file are checked field by field.
#include "src/workload/manifest.h"

#include <algorithm>
#include <optional>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "membrane/labels.h"
#include "src/endpoint/state_json.h"
#include "src/policy/yaml_fields.h"

namespace membrane::workload {
namespace {

using policy::yaml_fields::index;
using policy::yaml_fields::join;
using policy::yaml_fields::looksLikeJson;
using policy::yaml_fields::suggest;
using policy::yaml_fields::typeName;

bool isPolicyKind(std::string_view k) {
  return k == "CiliumNetworkPolicy" || k == "CiliumClusterwideNetworkPolicy" || k == "NetworkPolicy";
}
bool isPolicyNode(const YAML::Node& n) {
  return n.IsMap() && n["kind"] && n["kind"].IsScalar() && isPolicyKind(n["kind"].Scalar());
}
// `apply -n NS` (NS not "default") and a namespaced policy whose metadata
// names no namespace: the policy goes to NS, as with kubectl.
bool needsNamespace(const YAML::Node& policy, const std::string& default_ns) {
  const YAML::Node md = policy["metadata"];
  return default_ns != "default" && policy["kind"].Scalar() != "CiliumClusterwideNetworkPolicy" && md && md.IsMap() &&
         !md["namespace"] && md.size() > 0;
}

using policy::yaml_fields::Fields;

struct Spec {
  std::vector<std::string_view> known;
  std::vector<std::string_view> ignored;  // accepted Kubernetes fields with no meaning here
};

class Parser {
 public:
  Parser(std::string file, std::string default_ns) : file_(std::move(file)), default_ns_(std::move(default_ns)) {}
  std::vector<Diagnostic> diags;
  Manifests out;

  void error(const YAML::Node& at, const std::string& path, std::string msg) {
    const YAML::Mark m = at.Mark();
    diags.push_back(Diagnostic{file_, m.line >= 0 ? m.line + 1 : 0, m.column >= 0 ? m.column + 1 : 0, path,
                               std::move(msg)});
  }

  std::optional<Fields> fields(const YAML::Node& n, const std::string& path, const Spec& spec) {
    static const std::vector<std::pair<std::string_view, std::string_view>> kNone;
    return policy::yaml_fields::checkFields(n, path, {spec.known, spec.ignored, kNone},
                                            [this](const YAML::Node& at, const std::string& p, std::string msg) {
                                              error(at, p, std::move(msg));
                                            });
  }

  std::optional<std::string> str(const YAML::Node& n, const std::string& path) {
    if (n.IsScalar()) return n.Scalar();
    error(n, path, fmt::format("expected a string, got {}", typeName(n)));
    return std::nullopt;
  }
  std::optional<long> integer(const YAML::Node& n, const std::string& path, long lo, long hi) {
    if (n.IsScalar()) {
      const std::string& s = n.Scalar();
      if (!s.empty() && s.size() < 10 && std::all_of(s.begin(), s.end(), ::isdigit)) {
        long v = std::stol(s);
        if (v >= lo && v <= hi) return v;
        error(n, path, fmt::format("{} is out of range ({}-{})", s, lo, hi));
        return std::nullopt;
      }
    }
    error(n, path, fmt::format("expected a number ({}-{}), got {}", lo, hi,
                               n.IsScalar() ? "'" + n.Scalar() + "'" : std::string(typeName(n))));
    return std::nullopt;
  }
  std::optional<std::vector<std::string>> strings(const YAML::Node& n, const std::string& path) {
    std::vector<std::string> v;
    if (n.IsNull()) return v;
    if (!n.IsSequence()) {
      error(n, path, fmt::format("expected a list of strings, got {}", typeName(n)));
      return std::nullopt;
    }
    for (size_t i = 0; i < n.size(); ++i) {
      auto s = str(n[i], index(path, i));
      if (!s) return std::nullopt;
      v.push_back(*s);
    }
    return v;
  }
  std::optional<Labels> labelMap(const YAML::Node& n, const std::string& path) {
    Labels l;
    if (n.IsNull()) return l;
    if (!n.IsMap()) {
      error(n, path, fmt::format("expected a mapping of labels, got {}", typeName(n)));
      return std::nullopt;
    }
    for (auto it = n.begin(); it != n.end(); ++it) {
      if (!it->first.IsScalar() || !it->second.IsScalar()) {
        error(it->first, path, "label keys and values must be strings");
        return std::nullopt;
      }
      l[it->first.Scalar()] = it->second.Scalar();
    }
    return l;
  }

  bool dnsName(const YAML::Node& n, const std::string& path, const std::string& v) {
    bool ok = !v.empty() && v.size() <= 63 && std::isalnum(static_cast<unsigned char>(v.front())) &&
              std::isalnum(static_cast<unsigned char>(v.back()));
    for (char c : v) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
    if (!ok)
      error(n, path, fmt::format("'{}' is not a valid name (lowercase letters, digits and '-', "
                                 "starting and ending with a letter or digit, at most 63 characters)", v));
    return ok;
  }

  bool meta(const YAML::Node& n, const std::string& path, Meta& m, bool namespaced) {
    if (!n.IsDefined() || n.IsNull()) {
      error(n, path, "missing required field 'metadata' (with 'name')");
      return false;
    }
    auto f = fields(n, path,
                    {{"name", "namespace", "labels"},
                     {"annotations", "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"}});
    if (!f) return false;
    auto it = f->find("name");
    if (it == f->end()) {
      error(n, path, "missing required field 'name'");
      return false;
    }
    auto name = str(it->second.value, join(path, "name"));
    if (!name || !dnsName(it->second.value, join(path, "name"), *name)) return false;
    m.name = *name;
    m.line = it->second.value.Mark().line + 1;
    m.column = it->second.value.Mark().column + 1;
    m.ns = namespaced ? default_ns_ : "";
    if (auto ns = f->find("namespace"); ns != f->end()) {
      if (!namespaced) {
        error(ns->second.key, join(path, "namespace"), "this kind is cluster-scoped: remove 'namespace'");
        return false;
      }
      auto v = str(ns->second.value, join(path, "namespace"));
      if (!v || !dnsName(ns->second.value, join(path, "namespace"), *v)) return false;
      m.ns = *v;
    }
    if (auto l = f->find("labels"); l != f->end()) {
      auto v = labelMap(l->second.value, join(path, "labels"));
      if (!v) return false;
      m.labels = *v;
    }
    m.source = file_;
    return true;
  }

  bool container(const YAML::Node& n, const std::string& path, Container& c) {
    auto f = fields(n, path,
                    {{"name", "image", "command", "args", "env", "ports"},
                     {"imagePullPolicy", "resources", "livenessProbe", "readinessProbe", "terminationMessagePath",
                      "terminationMessagePolicy", "securityContext", "workingDir", "stdin", "tty"}});
    if (!f) return false;
    for (const char* req : {"name", "image"})
      if (!f->count(req)) {
        error(n, path, fmt::format("missing required field '{}'", req));
        return false;
      }
    auto name = str((*f)["name"].value, join(path, "name"));
    auto image = str((*f)["image"].value, join(path, "image"));
    if (!name || !image) return false;
    c.name = *name;
    c.image = *image;
    if (auto it = f->find("command"); it != f->end()) {
      auto v = strings(it->second.value, join(path, "command"));
      if (!v) return false;
      c.command = *v;
    }
    if (auto it = f->find("args"); it != f->end()) {
      auto v = strings(it->second.value, join(path, "args"));
      if (!v) return false;
      c.args = *v;
    }
    if (auto it = f->find("env"); it != f->end()) {
      const YAML::Node& e = it->second.value;
      std::string p = join(path, "env");
      if (!e.IsNull() && !e.IsSequence()) {
        error(e, p, fmt::format("expected a list, got {}", typeName(e)));
        return false;
      }
      for (size_t i = 0; i < e.size(); ++i) {
        auto ef = fields(e[i], index(p, i), {{"name", "value"}, {}});
        if (!ef) return false;
        if (!ef->count("name")) {
          error(e[i], index(p, i), "missing required field 'name'");
          return false;
        }
        EnvVar ev;
        auto nm = str((*ef)["name"].value, join(index(p, i), "name"));
        if (!nm) return false;
        ev.name = *nm;
        if (ef->count("value")) {
          auto v = str((*ef)["value"].value, join(index(p, i), "value"));
          if (!v) return false;
          ev.value = *v;
        }
        c.env.push_back(ev);
      }
    }
    if (auto it = f->find("ports"); it != f->end()) {
      const YAML::Node& ps = it->second.value;
      std::string p = join(path, "ports");
      if (!ps.IsNull() && !ps.IsSequence()) {
        error(ps, p, fmt::format("expected a list, got {}", typeName(ps)));
        return false;
      }
      for (size_t i = 0; i < ps.size(); ++i) {
        std::string pp = index(p, i);
        auto pf = fields(ps[i], pp, {{"name", "containerPort", "protocol"}, {"hostPort", "hostIP"}});
        if (!pf) return false;
        if (!pf->count("containerPort")) {
          error(ps[i], pp, "missing required field 'containerPort'");
          return false;
        }
        ContainerPort cp;
        auto port = integer((*pf)["containerPort"].value, join(pp, "containerPort"), 1, 65535);
        if (!port) return false;
        cp.port = static_cast<uint16_t>(*port);
        if (pf->count("name")) {
          auto v = str((*pf)["name"].value, join(pp, "name"));
          if (!v) return false;
          cp.name = *v;
        }
        if (pf->count("protocol")) {
          auto v = str((*pf)["protocol"].value, join(pp, "protocol"));
          if (!v) return false;
          if (*v != "TCP" && *v != "UDP") {
            error((*pf)["protocol"].value, join(pp, "protocol"), fmt::format("protocol '{}' is not supported (TCP or UDP)", *v));
            return false;
          }
          cp.protocol = *v;
        }
        c.ports.push_back(cp);
      }
    }
    return true;
  }

  bool podSpec(const YAML::Node& n, const std::string& path, PodSpec& s) {
    auto f = fields(n, path,
                    {{"containers", "restartPolicy", "serviceAccountName", "serviceAccount"},
                     {"terminationGracePeriodSeconds", "nodeSelector", "tolerations", "affinity", "dnsPolicy",
                      "schedulerName", "securityContext", "automountServiceAccountToken"}});
    if (!f) return false;
    auto it = f->find("containers");
    if (it == f->end()) {
      error(n, path, "missing required field 'containers'");
      return false;
    }
    const YAML::Node& cs = it->second.value;
    std::string cp = join(path, "containers");
    if (!cs.IsSequence() || cs.size() != 1) {
      error(cs, cp, cs.IsSequence() ? fmt::format("exactly one container is supported, got {}", cs.size())
                                    : fmt::format("expected a list, got {}", typeName(cs)));
      return false;
    }
    Container c;
    if (!container(cs[0], index(cp, 0), c)) return false;
    s.containers.push_back(c);
    if (auto rp = f->find("restartPolicy"); rp != f->end()) {
      auto v = str(rp->second.value, join(path, "restartPolicy"));
      if (!v) return false;
      if (*v != "Always" && *v != "OnFailure" && *v != "Never") {
        error(rp->second.value, join(path, "restartPolicy"),
              fmt::format("restartPolicy '{}' is not one of Always, OnFailure, Never", *v));
        return false;
      }
      s.restart_policy = *v;
    }
    // serviceAccount is the deprecated alias; serviceAccountName wins when both are set (as in Kubernetes).
    for (const char* key : {"serviceAccount", "serviceAccountName"}) {
      auto sa = f->find(key);
      if (sa == f->end()) continue;
      auto v = str(sa->second.value, join(path, key));
      if (!v || !serviceAccountName(sa->second.value, join(path, key), *v)) return false;
      s.service_account = *v;
    }
    return true;
  }

  // A DNS-1123 subdomain that is also a label value (the pod's
  // io.cilium.k8s.policy.serviceaccount label): at most 63 characters.
  bool serviceAccountName(const YAML::Node& n, const std::string& path, const std::string& v) {
    bool ok = !v.empty() && v.size() <= 63 && std::isalnum(static_cast<unsigned char>(v.front())) &&
              std::isalnum(static_cast<unsigned char>(v.back()));
    for (char c : v) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.');
    if (!ok)
      error(n, path, fmt::format("'{}' is not a valid service account name (lowercase letters, digits, '-' and '.', "
                                 "starting and ending with a letter or digit, at most 63 characters)", v));
    return ok;
  }

  void object(const YAML::Node& n, const std::string& path) {
    auto f = fields(n, path, {{"apiVersion", "kind", "metadata", "spec"}, {"status"}});
    if (!f) return;
    auto kind_it = f->find("kind");
    if (kind_it == f->end()) {
      error(n, path, "missing required field 'kind'");
      return;
    }
    auto kind = str(kind_it->second.value, join(path, "kind"));
    if (!kind) return;
    auto api_it = f->find("apiVersion");
    std::string api = api_it != f->end() && api_it->second.value.IsScalar() ? api_it->second.value.Scalar() : "";
    auto wantApi = [&](std::string_view want) {
      if (api == want) return true;
      error(api_it != f->end() ? api_it->second.value : n, join(path, "apiVersion"),
            api.empty() ? fmt::format("missing required field 'apiVersion' ('{}' for {})", want, *kind)
                        : fmt::format("apiVersion '{}' is not supported for {} (expected '{}')", api, *kind, want));
      return false;
    };
    YAML::Node md = f->count("metadata") ? (*f)["metadata"].value : YAML::Node();
    YAML::Node sp = f->count("spec") ? (*f)["spec"].value : YAML::Node(YAML::NodeType::Null);
    std::string mp = join(path, "metadata"), spp = join(path, "spec");
    if (*kind == "Namespace") {
      NamespaceObject o;
      if (!wantApi("v1") || !meta(md, mp, o.meta, false)) return;
      if (!sp.IsNull() && !fields(sp, spp, {{}, {"finalizers"}})) return;
      // Derived from the name (Kubernetes sets it, the agent refuses another
      // value): caught here, before anything of the apply is changed.
      const std::string name_label(labels::kNamespaceNameLabel);
      if (auto it = o.meta.labels.find(name_label); it != o.meta.labels.end() && it->second != o.meta.name)
        return error(md["labels"][name_label], join(mp, "labels." + name_label),
                     fmt::format("'{}' must be the namespace's name '{}' (the label is derived from the name; remove "
                                 "it or set it to '{}')",
                                 it->second, o.meta.name, o.meta.name));
      out.namespaces.push_back(o);
    } else if (*kind == "Pod") {
      PodObject o;
      if (!wantApi("v1") || !meta(md, mp, o.meta, true)) return;
      if (sp.IsNull()) return error(n, path, "missing required field 'spec'");
      if (!podSpec(sp, spp, o.spec)) return;
      out.pods.push_back(o);
    } else if (*kind == "Deployment") {
      DeploymentObject o;
      if (!wantApi("apps/v1") || !meta(md, mp, o.meta, true)) return;
      if (sp.IsNull()) return error(n, path, "missing required field 'spec'");
      auto sf = fields(sp, spp, {{"replicas", "selector", "template"},
                                 {"strategy", "revisionHistoryLimit", "progressDeadlineSeconds", "minReadySeconds"}});
      if (!sf) return;
      if (auto r = sf->find("replicas"); r != sf->end()) {
        auto v = integer(r->second.value, join(spp, "replicas"), 0, 100);
        if (!v) return;
        o.replicas = static_cast<int>(*v);
      }
      if (!sf->count("selector")) return error(sp, spp, "missing required field 'selector' (with matchLabels)");
      YAML::Node sel = (*sf)["selector"].value;
      auto self = fields(sel, join(spp, "selector"), {{"matchLabels"}, {}});
      if (!self) return;
      if (!self->count("matchLabels")) return error(sel, join(spp, "selector"), "missing required field 'matchLabels'");
      auto ml = labelMap((*self)["matchLabels"].value, join(spp, "selector.matchLabels"));
      if (!ml) return;
      o.selector = *ml;
      if (!sf->count("template")) return error(sp, spp, "missing required field 'template'");
      YAML::Node tp = (*sf)["template"].value;
      std::string tpp = join(spp, "template");
      auto tf = fields(tp, tpp, {{"metadata", "spec"}, {}});
      if (!tf) return;
      if (tf->count("metadata")) {
        auto mf = fields((*tf)["metadata"].value, join(tpp, "metadata"), {{"labels"}, {"annotations", "name"}});
        if (!mf) return;
        if (mf->count("labels")) {
          auto l = labelMap((*mf)["labels"].value, join(tpp, "metadata.labels"));
          if (!l) return;
          o.template_labels = *l;
        }
      }
      for (const auto& [k, v] : o.selector) {
        auto it = o.template_labels.find(k);
        if (it == o.template_labels.end() || it->second != v)
          return error(sel, join(spp, "selector.matchLabels"),
                       fmt::format("selector {}={} does not match the template's labels "
                                   "(spec.template.metadata.labels must contain every matchLabels entry)", k, v));
      }
      if (!tf->count("spec")) return error(tp, tpp, "missing required field 'spec'");
      if (!podSpec((*tf)["spec"].value, join(tpp, "spec"), o.spec)) return;
      out.deployments.push_back(o);
    } else if (*kind == "Service") {
      ServiceObject o;
      if (!wantApi("v1") || !meta(md, mp, o.meta, true)) return;
      auto sf = fields(sp, spp, {{"type", "selector", "ports", "clusterIP"}, {"sessionAffinity", "ipFamilies",
                                                                             "ipFamilyPolicy", "internalTrafficPolicy"}});
      if (!sf) return;
      if (auto t = sf->find("type"); t != sf->end()) {
        auto v = str(t->second.value, join(spp, "type"));
        if (!v) return;
        if (*v != "ClusterIP")
          return error(t->second.value, join(spp, "type"),
                       fmt::format("service type '{}' is not supported (only ClusterIP)", *v));
      }
      if (auto c = sf->find("clusterIP"); c != sf->end())
        return error(c->second.key, join(spp, "clusterIP"),
                     "clusterIP is allocated by membrane from --service-cidr: remove the field");
      if (auto s = sf->find("selector"); s != sf->end()) {
        auto v = labelMap(s->second.value, join(spp, "selector"));
        if (!v) return;
        o.selector = *v;
      }
      auto pit = sf->find("ports");
      if (pit == sf->end() || !pit->second.value.IsSequence() || pit->second.value.size() == 0)
        return error(pit == sf->end() ? sp : pit->second.value, join(spp, "ports"),
                     "a Service needs at least one entry in 'ports'");
      const YAML::Node& ps = pit->second.value;
      std::set<std::string> names;
      for (size_t i = 0; i < ps.size(); ++i) {
        std::string pp = index(join(spp, "ports"), i);
        auto pf = fields(ps[i], pp, {{"name", "port", "targetPort", "protocol"}, {"appProtocol"}});
        if (!pf) return;
        ServicePort port;
        if (!pf->count("port")) return error(ps[i], pp, "missing required field 'port'");
        auto pv = integer((*pf)["port"].value, join(pp, "port"), 1, 65535);
        if (!pv) return;
        port.port = static_cast<uint16_t>(*pv);
        if (pf->count("name")) {
          auto v = str((*pf)["name"].value, join(pp, "name"));
          if (!v) return;
          port.name = *v;
        }
        if (pf->count("targetPort")) {
          auto v = str((*pf)["targetPort"].value, join(pp, "targetPort"));
          if (!v) return;
          if (!v->empty() && std::all_of(v->begin(), v->end(), ::isdigit)) {
            if (!integer((*pf)["targetPort"].value, join(pp, "targetPort"), 1, 65535)) return;
          }
          port.target_port = *v;
        }
        if (pf->count("protocol")) {
          auto v = str((*pf)["protocol"].value, join(pp, "protocol"));
          if (!v) return;
          if (*v != "TCP" && *v != "UDP")
            return error((*pf)["protocol"].value, join(pp, "protocol"),
                         fmt::format("protocol '{}' is not supported (TCP or UDP)", *v));
          port.protocol = *v;
        }
        if (ps.size() > 1 && port.name.empty())
          return error(ps[i], pp, "a Service with several ports needs a 'name' on each");
        o.ports.push_back(port);
      }
      out.services.push_back(o);
    } else if (isPolicyKind(*kind)) {
      // Validated by the policy parser on policy_text.
    } else {
      error(kind_it->second.value, join(path, "kind"),
            fmt::format("kind '{}' is not supported (expected Namespace, Pod, Deployment, Service, "
                        "CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy or NetworkPolicy)", *kind));
    }
  }

  // A policy object that is not a document of its own (an item of a JSON
  // array or List, or one of several objects in one document): re-emitted
  // into policy_text, with `-n` added where the metadata names no namespace
  // (positions then refer to the emitted text, a limitation of these forms
  // only).
  void policyItem(const YAML::Node& n, const std::string& default_ns) {
    YAML::Node copy = YAML::Clone(n);
    if (needsNamespace(copy, default_ns)) copy["metadata"]["namespace"] = default_ns;
    YAML::Emitter e;
    e << copy;
    extra_policy_ += "---\n" + std::string(e.c_str()) + "\n";
  }

  // The objects of a JSON array / List.
  void listItems(const YAML::Node& items, const std::string& path, const std::string& default_ns) {
    if (!items.IsSequence()) return error(items, path, fmt::format("expected a list, got {}", typeName(items)));
    for (size_t i = 0; i < items.size(); ++i) {
      const YAML::Node& it = items[i];
      if (isPolicyNode(it))
        policyItem(it, default_ns);
      else
        object(it, index(path, i));
    }
  }

  std::string extra_policy_;

 private:
  std::string file_;
  std::string default_ns_;
};


bool isSeparator(std::string_view line) {
  if (line.substr(0, 3) != "---" && line.substr(0, 3) != "...") return false;
  return line.size() == 3 || line[3] == ' ' || line[3] == '\t' || line[3] == '\r';
}

}  // namespace

ManifestResult parseManifests(std::string_view text, const std::string& filename, const std::string& default_ns) {
  Parser p(filename, default_ns);
  std::string policy_text;   // policy documents at their positions (what is validated)
  std::string import_text;   // the same with `namespace: <-n>` added where missing (what is imported)
  std::map<size_t, std::string> insert_ns;  // line index -> namespace line to insert before it
  bool any_policy = false;
  try {
    // Split into documents at separator lines, keeping line numbers. JSON
    // takes the same way: kubectl reads a YAML stream whose documents are JSON
    // objects, and every one of them counts (a JSON string cannot hold a raw
    // newline, so a separator line is never inside one).
    std::vector<std::string> lines;
    {
      std::string cur;
      for (char c : text) {
        if (c == '\n') {
          lines.push_back(cur);
          cur.clear();
        } else {
          cur += c;
        }
      }
      if (!cur.empty()) lines.push_back(cur);
    }
    // line index -> (column, text) to insert there: `-n` for a flow-style metadata mapping.
    std::map<size_t, std::pair<size_t, std::string>> insert_inline;
    size_t start = 0;
    for (size_t i = 0; i <= lines.size(); ++i) {
      if (i < lines.size() && !isSeparator(lines[i])) continue;
      // Document = lines [start, i).
      std::string doc(start, '\n');
      for (size_t j = start; j < i; ++j) doc += lines[j] + "\n";
      // JSON allows tabs between tokens, YAML's scanner can reject them; JSON
      // strings cannot contain raw tabs, so replacing them keeps every column.
      const bool json_doc = looksLikeJson(doc);
      if (json_doc) std::replace(doc.begin(), doc.end(), '\t', ' ');
      bool policy_doc = false;
      try {
        // One document may still hold several nodes (`{...}{...}`, JSON
        // objects without a separator): LoadAll sees them all, Load would
        // silently keep the first. LoadAll needs the stuck-token check first.
        std::vector<YAML::Node> nodes;
        if (auto stuck = policy::yaml_fields::stuckDocument(doc)) {
          const char c = stuck->pos >= 0 && static_cast<size_t>(stuck->pos) < doc.size() ? doc[stuck->pos] : '?';
          p.diags.push_back(Diagnostic{filename, stuck->line + 1, stuck->column + 1, "",
                                       fmt::format("unexpected '{}' after the end of the document's top-level value", c)});
        } else {
          nodes = YAML::LoadAll(doc);
        }
        nodes.erase(std::remove_if(nodes.begin(), nodes.end(), [](const YAML::Node& n) { return n.IsNull(); }),
                    nodes.end());
        if (nodes.size() == 1 && isPolicyNode(nodes[0])) {
          const YAML::Node& n = nodes[0];
          policy_doc = true;
          // `apply -n NS`: a namespaced policy without metadata.namespace
          // goes to NS, as with kubectl. The namespace is inserted into the
          // text that is imported (validation runs on the text as written,
          // so diagnostics keep the file's positions).
          const YAML::Node md = n["metadata"];
          if (needsNamespace(n, default_ns)) {
            const int line = md.Mark().line, column = md.Mark().column;
            const bool at_brace = line >= 0 && static_cast<size_t>(line) < lines.size() && column >= 0 &&
                                  static_cast<size_t>(column) < lines[line].size() && lines[line][column] == '{';
            if (md.Style() == YAML::EmitterStyle::Block && line >= 0)
              insert_ns[static_cast<size_t>(line)] = std::string(column, ' ') + "namespace: " + default_ns;
            else if (md.Style() == YAML::EmitterStyle::Flow && at_brace)
              insert_inline[static_cast<size_t>(line)] = {static_cast<size_t>(column) + 1,
                                                          fmt::format("\"namespace\": {}, ", nlohmann::json(default_ns).dump())};
            else
              p.error(md, "metadata",
                      fmt::format("add 'namespace: {}' to this policy's metadata (-n cannot be added here)", default_ns));
          }
        } else {
          for (const auto& n : nodes) {
            if (isPolicyNode(n)) {
              p.policyItem(n, default_ns);
            } else if (n.IsMap() && n["kind"] && n["kind"].IsScalar() && n["kind"].Scalar() == "List") {
              p.listItems(n["items"], "items", default_ns);
            } else if (n.IsSequence() && json_doc) {
              p.listItems(n, "", default_ns);
            } else {
              p.object(n, "");
            }
          }
        }
      } catch (const YAML::Exception& e) {
        p.diags.push_back(Diagnostic{filename, e.mark.line + 1, e.mark.column + 1, "", e.msg});
      }
      for (size_t j = start; j < i; ++j) {
        std::string line = lines[j];
        if (json_doc) std::replace(line.begin(), line.end(), '\t', ' ');
        policy_text += policy_doc ? line + "\n" : "\n";
        if (policy_doc && insert_ns.count(j)) import_text += insert_ns[j] + "\n";
        if (auto it = insert_inline.find(j); policy_doc && it != insert_inline.end())
          line.insert(it->second.first, it->second.second);
        import_text += policy_doc ? line + "\n" : "\n";
      }
      if (i < lines.size()) {
        policy_text += lines[i] + "\n";
        import_text += lines[i] + "\n";
      }
      any_policy = any_policy || policy_doc;
      start = i + 1;
    }
  } catch (const YAML::Exception& e) {
    p.diags.push_back(Diagnostic{filename, e.mark.line + 1, e.mark.column + 1, "", e.msg});
  } catch (const std::exception& e) {
    p.diags.push_back(Diagnostic{filename, 0, 0, "", std::string("internal error: ") + e.what()});
  }
  if (!p.extra_policy_.empty()) {
    policy_text += p.extra_policy_;
    import_text += p.extra_policy_;
    any_policy = true;
  }
  ManifestResult r;
  if (any_policy) {
    auto pr = policy::parsePolicies(policy_text, filename);
    for (auto& d : pr.diagnostics) p.diags.push_back(d);
    if (pr.ok() && import_text != policy_text) {
      pr = policy::parsePolicies(import_text, filename);  // valid as checked, plus namespaces
      for (auto& d : pr.diagnostics) p.diags.push_back(d);
    }
    for (const auto& pol : pr.policies)
      r.manifests.policies.push_back({std::string(policy::kindName(pol.kind)), pol.name, pol.namespace_name});
    r.manifests.policy_text = import_text;
  }
  // Two objects of one kind with one name. kubectl applies both (the last
  // wins); membrane refuses, naming both places, as for policies: the first
  // definition would be dropped without a word.
  std::map<std::string, const Meta*> seen;
  auto dup = [&](const std::string& kind, const Meta& m) {
    auto [first, fresh] = seen.try_emplace(kind + "/" + m.ns + "/" + m.name, &m);
    if (!fresh)
      p.diags.push_back(Diagnostic{filename, m.line, m.column, "metadata.name",
                                   fmt::format("{} {} is defined twice (first at {}:{}:{}): kubectl would keep only "
                                               "the last definition; merge the two or rename one",
                                               kind, m.ns.empty() ? m.name : m.ns + "/" + m.name, filename,
                                               first->second->line, first->second->column)});
  };
  for (const auto& o : p.out.namespaces) dup("Namespace", o.meta);
  for (const auto& o : p.out.pods) dup("Pod", o.meta);
  for (const auto& o : p.out.deployments) dup("Deployment", o.meta);
  for (const auto& o : p.out.services) dup("Service", o.meta);
  std::sort(p.diags.begin(), p.diags.end(),
            [](const Diagnostic& a, const Diagnostic& b) { return std::tie(a.line, a.column) < std::tie(b.line, b.column); });
  r.diagnostics = std::move(p.diags);
  if (r.diagnostics.empty()) {
    auto pol = std::move(r.manifests.policies);
    auto text_copy = std::move(r.manifests.policy_text);
    r.manifests = std::move(p.out);
    r.manifests.policies = std::move(pol);
    r.manifests.policy_text = std::move(text_copy);
    if (r.manifests.empty()) r.diagnostics.push_back(Diagnostic{filename, 1, 1, "", "no object found"});
  }
  return r;
}

// ---- JSON forms -----------------------------------------------------------

void to_json(nlohmann::json& j, const ContainerPort& v) {
  j = {{"name", v.name}, {"containerPort", v.port}, {"protocol", v.protocol}};
}
void to_json(nlohmann::json& j, const EnvVar& v) { j = {{"name", v.name}, {"value", v.value}}; }
void to_json(nlohmann::json& j, const Container& v) {
  j = {{"name", v.name}, {"image", v.image}, {"command", v.command}, {"args", v.args}, {"env", v.env}, {"ports", v.ports}};
}
void to_json(nlohmann::json& j, const PodSpec& v) {
  j = {{"containers", v.containers}, {"restartPolicy", v.restart_policy}, {"serviceAccountName", v.service_account}};
}
void to_json(nlohmann::json& j, const Meta& v) {
  j = {{"name", v.name}, {"namespace", v.ns}, {"labels", v.labels}, {"source", v.source}};
}
void to_json(nlohmann::json& j, const PodObject& v) { j = {{"metadata", v.meta}, {"spec", v.spec}}; }
void to_json(nlohmann::json& j, const DeploymentObject& v) {
  j = {{"metadata", v.meta},
       {"spec",
        {{"replicas", v.replicas},
         {"selector", {{"matchLabels", v.selector}}},
         {"template", {{"metadata", {{"labels", v.template_labels}}}, {"spec", v.spec}}}}}};
}
void to_json(nlohmann::json& j, const ServicePort& v) {
  j = {{"name", v.name}, {"port", v.port}, {"targetPort", v.target_port}, {"protocol", v.protocol}};
}
void to_json(nlohmann::json& j, const ServiceObject& v) {
  j = {{"metadata", v.meta}, {"spec", {{"type", "ClusterIP"}, {"selector", v.selector}, {"ports", v.ports}}}};
}

namespace {

namespace st = endpoint::state;
using nlohmann::json;

// The list field `key` of `obj` (absent: empty), each item read by `item(j, path)`.
template <typename T, typename F>
Result<std::vector<T>> listField(const json& obj, const std::string& path, std::string_view key, F item) {
  MB_ASSIGN(const json arr, st::field<json>(obj, path, key, json::array()));
  const std::string p = st::join(path, key);
  if (!arr.is_array()) return st::typeError(p, "a list", arr);
  std::vector<T> out;
  for (size_t i = 0; i < arr.size(); ++i) {
    MB_ASSIGN(T v, item(arr[i], st::index(p, i)));
    out.push_back(std::move(v));
  }
  return out;
}

Result<ContainerPort> containerPortFromJson(const json& j, const std::string& path) {
  ContainerPort v;
  MB_ASSIGN(v.name, st::field<std::string>(j, path, "name", ""));
  MB_ASSIGN(v.port, st::field<uint16_t>(j, path, "containerPort", 0));
  MB_ASSIGN(v.protocol, st::field<std::string>(j, path, "protocol", "TCP"));
  return v;
}

Result<EnvVar> envVarFromJson(const json& j, const std::string& path) {
  EnvVar v;
  MB_ASSIGN(v.name, st::field<std::string>(j, path, "name", ""));
  MB_ASSIGN(v.value, st::field<std::string>(j, path, "value", ""));
  return v;
}

Result<Container> containerFromJson(const json& j, const std::string& path) {
  Container v;
  using Strings = std::vector<std::string>;
  MB_ASSIGN(v.name, st::field<std::string>(j, path, "name", ""));
  MB_ASSIGN(v.image, st::field<std::string>(j, path, "image", ""));
  MB_ASSIGN(v.command, st::field<Strings>(j, path, "command", {}));
  MB_ASSIGN(v.args, st::field<Strings>(j, path, "args", {}));
  MB_ASSIGN(v.env, listField<EnvVar>(j, path, "env", envVarFromJson));
  MB_ASSIGN(v.ports, listField<ContainerPort>(j, path, "ports", containerPortFromJson));
  return v;
}

Result<Meta> metaFromJson(const json& j, const std::string& path) {
  Meta v;
  MB_ASSIGN(v.name, st::field<std::string>(j, path, "name", ""));
  MB_ASSIGN(v.ns, st::field<std::string>(j, path, "namespace", ""));
  MB_ASSIGN(v.labels, st::field<Labels>(j, path, "labels", {}));
  MB_ASSIGN(v.source, st::field<std::string>(j, path, "source", ""));
  return v;
}

Result<ServicePort> servicePortFromJson(const json& j, const std::string& path) {
  ServicePort v;
  MB_ASSIGN(v.name, st::field<std::string>(j, path, "name", ""));
  MB_ASSIGN(v.port, st::field<uint16_t>(j, path, "port", 0));
  MB_ASSIGN(v.target_port, st::field<std::string>(j, path, "targetPort", ""));
  MB_ASSIGN(v.protocol, st::field<std::string>(j, path, "protocol", "TCP"));
  return v;
}

// The required object field `key` of `obj`, read by `read(j, path)`.
template <typename F>
auto objectField(const json& obj, const std::string& path, std::string_view key, F read)
    -> decltype(read(obj, path)) {
  MB_ASSIGN(const json v, st::field<json>(obj, path, key));
  return read(v, st::join(path, key));
}

}  // namespace

Result<PodSpec> podSpecFromJson(const json& j, const std::string& path) {
  PodSpec v;
  MB_ASSIGN(v.containers, listField<Container>(j, path, "containers", containerFromJson));
  MB_ASSIGN(v.restart_policy, st::field<std::string>(j, path, "restartPolicy", "Always"));
  MB_ASSIGN(v.service_account, st::field<std::string>(j, path, "serviceAccountName", "default"));
  return v;
}

Result<PodObject> podFromJson(const json& j, const std::string& path) {
  PodObject v;
  MB_ASSIGN(v.meta, objectField(j, path, "metadata", metaFromJson));
  MB_ASSIGN(v.spec, objectField(j, path, "spec", podSpecFromJson));
  return v;
}

Result<DeploymentObject> deploymentFromJson(const json& j, const std::string& path) {
  DeploymentObject v;
  MB_ASSIGN(v.meta, objectField(j, path, "metadata", metaFromJson));
  MB_ASSIGN(const json s, st::field<json>(j, path, "spec"));
  const std::string sp = st::join(path, "spec");
  MB_ASSIGN(v.replicas, st::field<int>(s, sp, "replicas", 1));
  MB_ASSIGN(const json sel, st::field<json>(s, sp, "selector"));
  MB_ASSIGN(v.selector, st::field<Labels>(sel, st::join(sp, "selector"), "matchLabels", {}));
  MB_ASSIGN(const json t, st::field<json>(s, sp, "template"));
  const std::string tp = st::join(sp, "template");
  MB_ASSIGN(const json tm, st::field<json>(t, tp, "metadata"));
  MB_ASSIGN(v.template_labels, st::field<Labels>(tm, st::join(tp, "metadata"), "labels", {}));
  MB_ASSIGN(v.spec, objectField(t, tp, "spec", podSpecFromJson));
  return v;
}

Result<ServiceObject> serviceFromJson(const json& j, const std::string& path) {
  ServiceObject v;
  MB_ASSIGN(v.meta, objectField(j, path, "metadata", metaFromJson));
  MB_ASSIGN(const json s, st::field<json>(j, path, "spec"));
  const std::string sp = st::join(path, "spec");
  MB_ASSIGN(v.selector, st::field<Labels>(s, sp, "selector", {}));
  MB_ASSIGN(v.ports, listField<ServicePort>(s, sp, "ports", servicePortFromJson));
  return v;
}

}  // namespace membrane::workload

#include "src/kernel/netlink.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_arp.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/route.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "membrane/ipv4.h"
#include "membrane/unique_fd.h"

namespace membrane::kernel {
namespace {

// Adds context to the error of a Result<T>, passes a value through.
template <typename T>
Result<T> withContext(Result<T>&& r, const std::string& ctx) {
  if (r.ok()) return std::move(r);
  return r.error().wrap(ctx);
}

// ---------------------------------------------------------------------------
// libnl ownership

struct NlSockDeleter { void operator()(nl_sock* s) const { nl_socket_free(s); } };
struct NlMsgDeleter { void operator()(nl_msg* m) const { nlmsg_free(m); } };
struct NlCbDeleter { void operator()(nl_cb* c) const { nl_cb_put(c); } };
struct NlAddrDeleter { void operator()(nl_addr* a) const { nl_addr_put(a); } };
struct NlCacheDeleter { void operator()(nl_cache* c) const { nl_cache_free(c); } };
struct LinkDeleter { void operator()(rtnl_link* l) const { rtnl_link_put(l); } };
struct AddrDeleter { void operator()(rtnl_addr* a) const { rtnl_addr_put(a); } };
struct RouteDeleter { void operator()(rtnl_route* r) const { rtnl_route_put(r); } };
struct NeighDeleter { void operator()(rtnl_neigh* n) const { rtnl_neigh_put(n); } };
using NlSockPtr = std::unique_ptr<nl_sock, NlSockDeleter>;
using NlMsgPtr = std::unique_ptr<nl_msg, NlMsgDeleter>;
using NlCbPtr = std::unique_ptr<nl_cb, NlCbDeleter>;
using NlAddrPtr = std::unique_ptr<nl_addr, NlAddrDeleter>;
using NlCachePtr = std::unique_ptr<nl_cache, NlCacheDeleter>;
using LinkPtr = std::unique_ptr<rtnl_link, LinkDeleter>;
using AddrPtr = std::unique_ptr<rtnl_addr, AddrDeleter>;
using RoutePtr = std::unique_ptr<rtnl_route, RouteDeleter>;
using NeighPtr = std::unique_ptr<rtnl_neigh, NeighDeleter>;

constexpr uint8_t kRouteProtocol = RTPROT_BOOT;  // what `ip route add` uses

// libnl folds kernel errnos into its own NLE_* codes (ENODEV, ESRCH and
// ENOENT all become NLE_OBJ_NOTFOUND). Map back so callers can test
// Error::code against errno values.
int nleToErrno(int nle) {
  switch (nle < 0 ? -nle : nle) {
    case NLE_EXIST: return EEXIST;
    case NLE_OBJ_NOTFOUND: return ENOENT;
    case NLE_NODEV: return ENODEV;
    case NLE_PERM: return EPERM;
    case NLE_NOACCESS: return EACCES;
    case NLE_NOMEM: return ENOMEM;
    case NLE_BUSY: return EBUSY;
    case NLE_AGAIN: return EAGAIN;
    case NLE_RANGE: return ERANGE;
    case NLE_OPNOTSUPP: return EOPNOTSUPP;
    case NLE_AF_NOSUPPORT: return EAFNOSUPPORT;
    case NLE_NOADDR: return EADDRNOTAVAIL;
    case NLE_MSGSIZE: return EMSGSIZE;
    default: return EINVAL;
  }
}

Error nlError(int nle, const std::string& what) { return Error(nleToErrno(nle), what + ": " + nl_geterror(nle)); }

Result<NlSockPtr> openSocket() {
  NlSockPtr sk(nl_socket_alloc());
  if (!sk) return Error(ENOMEM, "netlink socket: out of memory");
  if (int r = nl_connect(sk.get(), NETLINK_ROUTE); r < 0) return nlError(r, "connect rtnetlink");
  // Extended acks carry the kernel's reason ("Nexthop device is not up")
  // besides the bare errno. Best effort: old kernels just ignore it.
  int one = 1;
  (void)::setsockopt(nl_socket_get_fd(sk.get()), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
  return sk;
}

struct AckState {
  bool done = false;
  int err = 0;          // positive errno from the kernel
  std::string extack;   // NLMSGERR_ATTR_MSG, if any
};

int onAck(nl_msg*, void* arg) {
  static_cast<AckState*>(arg)->done = true;
  return NL_STOP;
}

int onError(sockaddr_nl*, nlmsgerr* e, void* arg) {
  auto* st = static_cast<AckState*>(arg);
  st->done = true;
  st->err = -e->error;
  // libnl hands us a pointer into the received message; the header sits
  // right before the payload. TLVs follow the (possibly capped) echo of our
  // request, see Documentation/userspace-api/netlink/intro.rst.
  const auto* hdr = reinterpret_cast<const nlmsghdr*>(reinterpret_cast<const char*>(e) - NLMSG_HDRLEN);
  if (!(hdr->nlmsg_flags & NLM_F_ACK_TLVS)) return NL_STOP;
  size_t off = sizeof(nlmsgerr);
  if (!(hdr->nlmsg_flags & NLM_F_CAPPED)) off += e->msg.nlmsg_len - NLMSG_HDRLEN;
  size_t total = hdr->nlmsg_len - NLMSG_HDRLEN;
  const char* base = reinterpret_cast<const char*>(e);
  while (off + NLA_HDRLEN <= total) {
    const auto* a = reinterpret_cast<const nlattr*>(base + off);
    if (a->nla_len < NLA_HDRLEN || off + a->nla_len > total) break;
    if ((a->nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
      st->extack.assign(base + off + NLA_HDRLEN, strnlen(base + off + NLA_HDRLEN, a->nla_len - NLA_HDRLEN));
      break;
    }
    off += NLA_ALIGN(a->nla_len);
  }
  return NL_STOP;
}

// Sends one request and waits for its ack. The error keeps the kernel's
// errno (not libnl's folded code) and its extended ack text.
Status transact(nl_sock* sk, nl_msg* msg, const std::string& what) {
  if (int r = nl_send_auto(sk, msg); r < 0) return nlError(r, what + ": send");
  AckState st;
  // nl_socket_get_cb() hands out a new reference: hold it in a pointer too.
  NlCbPtr sock_cb(nl_socket_get_cb(sk));
  NlCbPtr cb(sock_cb ? nl_cb_clone(sock_cb.get()) : nullptr);
  if (!cb) return Error(ENOMEM, what + ": out of memory");
  nl_cb_err(cb.get(), NL_CB_CUSTOM, onError, &st);
  nl_cb_set(cb.get(), NL_CB_ACK, NL_CB_CUSTOM, onAck, &st);
  while (!st.done) {
    int r = nl_recvmsgs(sk, cb.get());
    if (r < 0 && !st.done) return nlError(r, what + ": receive");
  }
  if (st.err != 0) {
    std::string m = what + ": " + membrane::errnoText(st.err);
    if (!st.extack.empty()) m += " (" + st.extack + ")";
    return Error(st.err, m);
  }
  return okStatus();
}

// Builds with a libnl builder (returns int, fills nl_msg**) and transacts.
template <typename Build>
Status request(nl_sock* sk, const std::string& what, Build&& build) {
  nl_msg* raw = nullptr;
  if (int r = build(&raw); r < 0) return nlError(r, what + ": build request");
  NlMsgPtr msg(raw);
  return transact(sk, msg.get(), what);
}

NlAddrPtr ipv4Addr(uint32_t addr_be, uint8_t prefix_len) {
  NlAddrPtr a(nl_addr_build(AF_INET, &addr_be, sizeof(addr_be)));
  if (a) nl_addr_set_prefixlen(a.get(), prefix_len);
  return a;
}

// ---------------------------------------------------------------------------
// Links

Status validateIfname(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ || name == "." || name == "..")
    return Error::invalid("invalid interface name \"" + name + "\": must be 1.." + std::to_string(IFNAMSIZ - 1) +
                          " characters, not . or ..");
  for (char c : name)
    if (c == '/' || c == ':' || c <= ' ' || c == 0x7f)
      return Error::invalid("invalid interface name \"" + name + "\": no '/', ':', spaces or control characters");
  return okStatus();
}

// ENOENT if absent.
Result<LinkPtr> getLink(nl_sock* sk, const std::string& name) {
  rtnl_link* raw = nullptr;
  int r = rtnl_link_get_kernel(sk, 0, name.c_str(), &raw);
  if (r < 0) {
    int e = nleToErrno(r);
    if (e == ENODEV || e == ENOENT) return Error(ENOENT, "link " + name + " does not exist");
    return nlError(r, "get link " + name);
  }
  return LinkPtr(raw);
}

MacAddress macOf(rtnl_link* link) {
  MacAddress mac{};
  nl_addr* a = rtnl_link_get_addr(link);
  if (a && nl_addr_get_len(a) == mac.size()) std::memcpy(mac.data(), nl_addr_get_binary_addr(a), mac.size());
  return mac;
}

// Changes flags/MTU of an existing link: RTM_NEWLINK without NLM_F_CREATE
// on its ifindex is a plain "set".
Status setLink(nl_sock* sk, uint32_t ifindex, const std::string& ifname, bool up, uint32_t mtu) {
  LinkPtr change(rtnl_link_alloc());
  if (!change) return Error(ENOMEM, "set link " + ifname + ": out of memory");
  rtnl_link_set_ifindex(change.get(), static_cast<int>(ifindex));
  if (up) rtnl_link_set_flags(change.get(), IFF_UP);
  if (mtu != 0) rtnl_link_set_mtu(change.get(), mtu);
  return request(sk, std::string(up ? "set up " : "set ") + ifname,
                 [&](nl_msg** m) { return rtnl_link_build_add_request(change.get(), 0, m); });
}

// OK if absent.
Status deleteLink(nl_sock* sk, const std::string& name) {
  LinkPtr link(rtnl_link_alloc());
  if (!link) return Error(ENOMEM, "delete link " + name + ": out of memory");
  rtnl_link_set_name(link.get(), name.c_str());
  Status st = request(sk, "delete link " + name,
                      [&](nl_msg** m) { return rtnl_link_build_delete_request(link.get(), m); });
  if (!st.ok() && (st.error().code == ENODEV || st.error().code == ENOENT)) return okStatus();
  return st;
}

// Writes "1" to net.ipv6.conf.<ifname>.disable_ipv6 of the CALLING thread's
// namespace (/proc/sys/net resolves against the opener's namespace, which is
// why this works inside Netns::run without remounting anything). A kernel
// without IPv6 has no such file: nothing to disable then.
Status disableIpv6(const std::string& ifname) {
  const std::string path = "/proc/sys/net/ipv6/conf/" + ifname + "/disable_ipv6";
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT && ::access("/proc/sys/net/ipv6", F_OK) != 0) return okStatus();
    return Error::fromErrno(errno, "disable IPv6 on " + ifname + ": open " + path);
  }
  if (::write(fd.get(), "1", 1) != 1) return Error::fromErrno(errno, "disable IPv6 on " + ifname + ": write " + path);
  return okStatus();
}

// ---------------------------------------------------------------------------
// Addresses, routes, neighbours

Status addAddress(nl_sock* sk, uint32_t ifindex, const std::string& ifname, uint32_t ip_be, uint8_t prefix_len) {
  const std::string what = "add address " + ipv4HostOrderToString(ntohl(ip_be)) + "/" + std::to_string(prefix_len) + " to " + ifname;
  AddrPtr addr(rtnl_addr_alloc());
  NlAddrPtr local = ipv4Addr(ip_be, prefix_len);
  if (!addr || !local) return Error(ENOMEM, what + ": out of memory");
  rtnl_addr_set_ifindex(addr.get(), static_cast<int>(ifindex));
  rtnl_addr_set_family(addr.get(), AF_INET);
  if (int r = rtnl_addr_set_local(addr.get(), local.get()); r < 0) return nlError(r, what);
  rtnl_addr_set_prefixlen(addr.get(), prefix_len);
  // REPLACE: re-adding the same address is a no-op, which makes the ensure*
  // functions idempotent.
  return request(sk, what,
                 [&](nl_msg** m) { return rtnl_addr_build_add_request(addr.get(), NLM_F_CREATE | NLM_F_REPLACE, m); });
}

struct RouteSpec {
  uint32_t dst_be = 0;
  uint8_t prefix_len = 0;
  uint8_t type = RTN_UNICAST;
  uint8_t scope = RT_SCOPE_UNIVERSE;
  uint32_t oif = 0;         // 0: none
  uint32_t gateway_be = 0;  // 0: none
  uint32_t prefsrc_be = 0;  // 0: none
};

std::string describe(const RouteSpec& r, const std::string& ifname) {
  std::string s;
  if (r.type == RTN_UNREACHABLE) s = "unreachable ";
  s += r.prefix_len == 0 && r.dst_be == 0 ? std::string("default")
                                          : ipv4HostOrderToString(ntohl(r.dst_be)) + "/" + std::to_string(r.prefix_len);
  if (r.gateway_be) s += " via " + ipv4HostOrderToString(ntohl(r.gateway_be));
  if (!ifname.empty()) s += " dev " + ifname;
  return s;
}

Result<RoutePtr> buildRoute(const RouteSpec& spec) {
  RoutePtr route(rtnl_route_alloc());
  NlAddrPtr dst = ipv4Addr(spec.dst_be, spec.prefix_len);
  if (!route || !dst) return Error(ENOMEM, "out of memory");
  rtnl_route_set_family(route.get(), AF_INET);
  rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
  rtnl_route_set_type(route.get(), spec.type);
  rtnl_route_set_scope(route.get(), spec.scope);
  rtnl_route_set_protocol(route.get(), kRouteProtocol);
  if (int r = rtnl_route_set_dst(route.get(), dst.get()); r < 0) return nlError(r, "set destination");
  if (spec.prefsrc_be) {
    NlAddrPtr src = ipv4Addr(spec.prefsrc_be, 32);
    if (!src) return Error(ENOMEM, "out of memory");
    if (int r = rtnl_route_set_pref_src(route.get(), src.get()); r < 0) return nlError(r, "set source");
  }
  if (spec.oif || spec.gateway_be) {
    rtnl_nexthop* nh = rtnl_route_nh_alloc();
    if (!nh) return Error(ENOMEM, "out of memory");
    if (spec.oif) rtnl_route_nh_set_ifindex(nh, static_cast<int>(spec.oif));
    if (spec.gateway_be) {
      NlAddrPtr gw = ipv4Addr(spec.gateway_be, 32);
      if (!gw) {
        rtnl_route_nh_free(nh);
        return Error(ENOMEM, "out of memory");
      }
      rtnl_route_nh_set_gateway(nh, gw.get());
    }
    rtnl_route_add_nexthop(route.get(), nh);  // the route owns nh from here
  }
  return route;
}

Status addRoute(nl_sock* sk, const RouteSpec& spec, const std::string& ifname, int flags) {
  const std::string what = "add route " + describe(spec, ifname);
  MB_ASSIGN(RoutePtr route, withContext(buildRoute(spec), what));
  return request(sk, what, [&](nl_msg** m) { return rtnl_route_build_add_request(route.get(), flags, m); });
}

// OK if absent. Type, scope and oif must match for the kernel to pick the
// route, so an identically-prefixed route of someone else survives.
Status deleteRoute(nl_sock* sk, const RouteSpec& spec, const std::string& ifname) {
  const std::string what = "delete route " + describe(spec, ifname);
  MB_ASSIGN(RoutePtr route, withContext(buildRoute(spec), what));
  Status st = request(sk, what, [&](nl_msg** m) { return rtnl_route_build_del_request(route.get(), 0, m); });
  if (!st.ok() && st.error().code == ESRCH) return okStatus();
  return st;
}

Status addPermanentNeighbour(nl_sock* sk, uint32_t ifindex, const std::string& ifname, uint32_t ip_be,
                             const MacAddress& mac) {
  const std::string what = "add permanent neighbour " + ipv4HostOrderToString(ntohl(ip_be)) + " dev " + ifname;
  NeighPtr neigh(rtnl_neigh_alloc());
  NlAddrPtr dst = ipv4Addr(ip_be, 32);
  NlAddrPtr ll(nl_addr_build(AF_LLC, mac.data(), mac.size()));
  if (!neigh || !dst || !ll) return Error(ENOMEM, what + ": out of memory");
  rtnl_neigh_set_ifindex(neigh.get(), static_cast<int>(ifindex));
  rtnl_neigh_set_family(neigh.get(), AF_INET);
  if (int r = rtnl_neigh_set_dst(neigh.get(), dst.get()); r < 0) return nlError(r, what);
  rtnl_neigh_set_lladdr(neigh.get(), ll.get());
  rtnl_neigh_set_state(neigh.get(), NUD_PERMANENT);
  return request(sk, what,
                 [&](nl_msg** m) { return rtnl_neigh_build_add_request(neigh.get(), NLM_F_CREATE | NLM_F_REPLACE, m); });
}

// Does the main table hold a route to dst/prefix_len of `type` (and, if
// oif != 0, through oif)?
Result<bool> hasRoute(nl_sock* sk, uint32_t dst_be, uint8_t prefix_len, uint8_t type, uint32_t oif) {
  nl_cache* raw = nullptr;
  if (int r = rtnl_route_alloc_cache(sk, AF_INET, 0, &raw); r < 0) return nlError(r, "dump routes");
  NlCachePtr cache(raw);
  for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
    auto* route = reinterpret_cast<rtnl_route*>(o);
    if (rtnl_route_get_table(route) != RT_TABLE_MAIN || rtnl_route_get_type(route) != type) continue;
    nl_addr* dst = rtnl_route_get_dst(route);
    if (!dst || nl_addr_get_prefixlen(dst) != prefix_len) continue;
    uint32_t d = 0;
    if (nl_addr_get_len(dst) == sizeof(d)) std::memcpy(&d, nl_addr_get_binary_addr(dst), sizeof(d));
    if (d != dst_be) continue;
    if (oif == 0) return true;
    if (rtnl_route_get_nnexthops(route) == 1 &&
        rtnl_route_nh_get_ifindex(rtnl_route_nexthop_n(route, 0)) == static_cast<int>(oif))
      return true;
  }
  return false;
}

Result<bool> hasAddress(nl_sock* sk, uint32_t ifindex, uint32_t ip_be) {
  nl_cache* raw = nullptr;
  if (int r = rtnl_addr_alloc_cache(sk, &raw); r < 0) return nlError(r, "dump addresses");
  NlCachePtr cache(raw);
  for (nl_object* o = nl_cache_get_first(cache.get()); o; o = nl_cache_get_next(o)) {
    auto* addr = reinterpret_cast<rtnl_addr*>(o);
    if (rtnl_addr_get_family(addr) != AF_INET || rtnl_addr_get_ifindex(addr) != static_cast<int>(ifindex)) continue;
    nl_addr* local = rtnl_addr_get_local(addr);
    uint32_t a = 0;
    if (local && nl_addr_get_len(local) == sizeof(a)) std::memcpy(&a, nl_addr_get_binary_addr(local), sizeof(a));
    if (a == ip_be) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------
// Rollback: undo steps registered during a multi-step setup, in reverse, if
// the setup does not reach commit(). Undo failures are reported next to the
// original error so an operator knows what may be left behind.
class Rollback {
 public:
  Rollback() = default;
  Rollback(const Rollback&) = delete;
  Rollback& operator=(const Rollback&) = delete;
  ~Rollback() { (void)undo(); }

  void add(std::function<Status()> step) { steps_.push_back(std::move(step)); }
  void commit() { steps_.clear(); }
  // Undoes now and returns err, extended with undo failures if any.
  Error fail(Error err) {
    std::string leftovers = undo();
    if (!leftovers.empty()) err.message += " (rollback incomplete: " + leftovers + ")";
    return err;
  }

 private:
  std::string undo() {
    std::string failures;
    for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) {
      Status st = (*it)();
      if (!st.ok()) failures += (failures.empty() ? "" : "; ") + st.error().message;
    }
    steps_.clear();
    return failures;
  }
  std::vector<std::function<Status()>> steps_;
};

// Pod-side configuration, run inside the pod namespace.
struct PodSide {
  uint32_t ifindex = 0;
  MacAddress mac{};
};

Status preparePodNamespace() {
  // Both "all" (existing devices, i.e. lo) and "default" (devices created
  // later, i.e. eth0 when the veth pair is born in this namespace), so not
  // even a link-local address or a router solicitation appears.
  MB_TRY(disableIpv6("all"));
  MB_TRY(disableIpv6("default"));
  MB_ASSIGN(NlSockPtr sk, openSocket());
  MB_ASSIGN(LinkPtr lo, getLink(sk.get(), "lo"));
  return setLink(sk.get(), static_cast<uint32_t>(rtnl_link_get_ifindex(lo.get())), "lo", true, 0);
}

Result<PodSide> configurePodSide(const PodNetworkSpec& spec, const MacAddress& host_mac) {
  MB_ASSIGN(NlSockPtr sk, openSocket());
  const std::string& dev = spec.pod_ifname;
  MB_ASSIGN(LinkPtr link, getLink(sk.get(), dev));
  PodSide out;
  out.ifindex = static_cast<uint32_t>(rtnl_link_get_ifindex(link.get()));
  out.mac = macOf(link.get());
  MB_TRY(disableIpv6(dev));
  // Up before routes: IPv4 refuses a nexthop on a down device.
  MB_TRY(setLink(sk.get(), out.ifindex, dev, true, 0));
  MB_TRY(addAddress(sk.get(), out.ifindex, dev, spec.ipv4_be, 32));
  RouteSpec to_gw{.dst_be = spec.gateway_be, .prefix_len = 32, .scope = RT_SCOPE_LINK, .oif = out.ifindex};
  MB_TRY(addRoute(sk.get(), to_gw, dev, NLM_F_CREATE | NLM_F_EXCL));
  RouteSpec dflt{.oif = out.ifindex, .gateway_be = spec.gateway_be};
  MB_TRY(addRoute(sk.get(), dflt, dev, NLM_F_CREATE | NLM_F_EXCL));
  MB_TRY(addPermanentNeighbour(sk.get(), out.ifindex, dev, spec.gateway_be, host_mac));
  return out;
}

uint32_t hostOrder(uint32_t be) { return ntohl(be); }

}  // namespace

// ---------------------------------------------------------------------------

std::string hostIfnameFor(const std::string& ns, const std::string& pod, const std::string& salt) {
  // FNV-1a 64 with a separator byte that cannot occur in Kubernetes names,
  // so ("ab","c") and ("a","bc") differ.
  uint64_t h = 0xcbf29ce484222325ULL;
  auto mix = [&h](const std::string& s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 0x100000001b3ULL;
    }
    h ^= 0xff;
    h *= 0x100000001b3ULL;
  };
  mix(ns);
  mix(pod);
  mix(salt);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string name = "lxc";
  for (int i = 10; i >= 0; --i) name += kHex[(h >> (i * 4)) & 0xf];
  return name;
}

Status validatePodNetworkSpec(const PodNetworkSpec& spec) {
  if (spec.adopt_netns_path.empty()) {
    MB_TRY(Netns::validateName(spec.netns_name));
  } else if (spec.adopt_netns_path[0] != '/') {
    return Error::invalid("netns path \"" + spec.adopt_netns_path + "\" must be absolute");
  }
  MB_TRY(validateIfname(spec.host_ifname));
  MB_TRY(validateIfname(spec.pod_ifname));
  if (spec.ipv4_be == 0) return Error::invalid("pod address must not be 0.0.0.0");
  if (spec.gateway_be == 0) return Error::invalid("gateway address must not be 0.0.0.0");
  if (spec.ipv4_be == spec.gateway_be)
    return Error::invalid("pod address " + ipv4HostOrderToString(ntohl(spec.ipv4_be)) + " equals the gateway");
  if ((hostOrder(spec.ipv4_be) >> 24) == 127 || (hostOrder(spec.ipv4_be) >> 28) >= 14)
    return Error::invalid("pod address " + ipv4HostOrderToString(ntohl(spec.ipv4_be)) + " is loopback, multicast or reserved");
  if (spec.mtu < 68 || spec.mtu > 65535)
    return Error::invalid("MTU " + std::to_string(spec.mtu) + " out of range 68..65535");
  return okStatus();
}

namespace {

// The namespace a pod network lives in: created (membrane's own pods) or
// opened by path (adopted). The rollback removes only a namespace made here.
Result<Netns> podNamespace(const PodNetworkSpec& spec, Rollback& rollback) {
  if (!spec.adopt_netns_path.empty()) {
    MB_ASSIGN(Netns ns, Netns::openPath(spec.adopt_netns_path));
    // The kernel would refuse the duplicate too (EEXIST on the veth), with a
    // message that names neither the interface nor the namespace.
    MB_ASSIGN(bool taken, ns.run([&]() -> Result<bool> {
      MB_ASSIGN(NlSockPtr psk, openSocket());
      auto link = getLink(psk.get(), spec.pod_ifname);
      if (link.ok()) return true;
      if (link.error().code == ENOENT) return false;
      return link.error();
    }));
    if (taken)
      return Error(EEXIST, "interface " + spec.pod_ifname + " already exists in " + spec.adopt_netns_path);
    return ns;
  }
  MB_ASSIGN(Netns ns, Netns::create(spec.netns_name));
  rollback.add([name = spec.netns_name] { return Netns::remove(name); });
  MB_TRY(ns.run(preparePodNamespace));
  return ns;
}

std::string podNetworkName(const PodNetworkSpec& spec) {
  return spec.adopt_netns_path.empty() ? spec.netns_name : spec.adopt_netns_path;
}

}  // namespace

Result<PodNetwork> createPodNetwork(const PodNetworkSpec& spec) {
  const std::string where = podNetworkName(spec);
  const std::string ctx = "create pod network " + where;
  MB_TRY_CTX(validatePodNetworkSpec(spec), ctx);
  MB_ASSIGN(NlSockPtr sk, withContext(openSocket(), ctx));

  // Refuse an existing host device before creating anything: the kernel would
  // refuse it too (NLM_F_EXCL), but only after the namespace exists.
  if (auto existing = getLink(sk.get(), spec.host_ifname); existing.ok())
    return Error(EEXIST, ctx + ": host interface " + spec.host_ifname + " already exists: File exists");

  Rollback rollback;
  auto opened = podNamespace(spec, rollback);
  if (!opened.ok()) return rollback.fail(opened.error().wrap(ctx));
  Netns ns = std::move(opened).value();

  // The pod end is born inside the pod namespace (IFLA_NET_NS_FD on the
  // peer), so its name never clashes with a host device (host eth0) and it is
  // never visible on the host, not even briefly.
  const std::string veth_what = "create veth " + spec.host_ifname + "/" + spec.pod_ifname + " in " + where;
  {
    LinkPtr veth(rtnl_link_veth_alloc());
    if (!veth) return rollback.fail(Error(ENOMEM, ctx + ": " + veth_what + ": out of memory"));
    LinkPtr peer(rtnl_link_veth_get_peer(veth.get()));  // extra reference, dropped by `peer`
    rtnl_link_set_name(veth.get(), spec.host_ifname.c_str());
    rtnl_link_set_mtu(veth.get(), spec.mtu);
    rtnl_link_set_name(peer.get(), spec.pod_ifname.c_str());
    rtnl_link_set_mtu(peer.get(), spec.mtu);
    rtnl_link_set_ns_fd(peer.get(), ns.fd());
    Status st = request(sk.get(), veth_what, [&](nl_msg** m) {
      return rtnl_link_build_add_request(veth.get(), NLM_F_CREATE | NLM_F_EXCL, m);
    });
    if (!st.ok()) return rollback.fail(st.error().wrap(ctx));
  }
  // Deleting the host end deletes the pair (and the routes through it)
  // synchronously; removing the namespace alone would do it only when the
  // kernel gets round to destroying the namespace.
  rollback.add([&sk, name = spec.host_ifname] { return deleteLink(sk.get(), name); });

  PodNetwork out;
  out.netns_path = ns.path();
  {
    auto host = getLink(sk.get(), spec.host_ifname);
    if (!host.ok()) return rollback.fail(host.error().wrap(ctx));
    out.host_ifindex = static_cast<uint32_t>(rtnl_link_get_ifindex(host->get()));
    out.host_mac = macOf(host->get());
  }
  // IPv6 off before the link goes up, else it would already have sent DAD
  // and router solicitations from a link-local address.
  if (Status st = disableIpv6(spec.host_ifname); !st.ok()) return rollback.fail(st.error().wrap(ctx));
  if (Status st = setLink(sk.get(), out.host_ifindex, spec.host_ifname, true, 0); !st.ok())
    return rollback.fail(st.error().wrap(ctx));

  auto pod = ns.run([&] { return configurePodSide(spec, out.host_mac); });
  if (!pod.ok()) return rollback.fail(pod.error().wrap(ctx + ": configure " + spec.pod_ifname + " in " + where));
  out.pod_ifindex = pod->ifindex;
  out.pod_mac = pod->mac;

  // EXCL: another live pod owning the same address is an IPAM bug that must
  // surface, not be papered over by stealing its route. Source G so that
  // host->pod traffic carries the gateway address the pod knows.
  RouteSpec host_route{.dst_be = spec.ipv4_be, .prefix_len = 32, .scope = RT_SCOPE_LINK,
                       .oif = out.host_ifindex, .prefsrc_be = spec.gateway_be};
  if (Status st = addRoute(sk.get(), host_route, spec.host_ifname, NLM_F_CREATE | NLM_F_EXCL); !st.ok()) {
    Error e = st.error().wrap(ctx);
    if (e.code == EINVAL)
      e.message += " (is " + ipv4HostOrderToString(ntohl(spec.gateway_be)) + " a local address? call ensureHostDevice first)";
    return rollback.fail(std::move(e));
  }
  rollback.commit();
  return out;
}

Status deletePodNetwork(const std::string& netns_name, const std::string& host_ifname, uint32_t ipv4_be) {
  const std::string ctx = "delete pod network " + (netns_name.empty() ? host_ifname : netns_name);
  if (!netns_name.empty()) MB_TRY_CTX(Netns::validateName(netns_name), ctx);
  MB_TRY_CTX(validateIfname(host_ifname), ctx);
  MB_ASSIGN(NlSockPtr sk, withContext(openSocket(), ctx));
  auto link = getLink(sk.get(), host_ifname);
  if (link.ok()) {
    // The route would vanish with the link anyway; deleting it first keeps
    // the window in which the address is routed to a dying device minimal.
    uint32_t ifindex = static_cast<uint32_t>(rtnl_link_get_ifindex(link->get()));
    RouteSpec host_route{.dst_be = ipv4_be, .prefix_len = 32, .scope = RT_SCOPE_LINK, .oif = ifindex};
    MB_TRY_CTX(deleteRoute(sk.get(), host_route, host_ifname), ctx);
    MB_TRY_CTX(deleteLink(sk.get(), host_ifname), ctx);
  } else if (link.error().code != ENOENT) {
    return link.error().wrap(ctx);
  }
  if (!netns_name.empty()) MB_TRY_CTX(Netns::remove(netns_name), ctx);
  return okStatus();
}

Result<PodNetwork> inspectPodNetwork(const PodNetworkSpec& spec) {
  const std::string ctx = "inspect pod network " + podNetworkName(spec);
  MB_TRY_CTX(validatePodNetworkSpec(spec), ctx);
  MB_ASSIGN(Netns ns, withContext(spec.adopt_netns_path.empty() ? Netns::open(spec.netns_name)
                                                                 : Netns::openPath(spec.adopt_netns_path),
                                  ctx));
  MB_ASSIGN(NlSockPtr sk, withContext(openSocket(), ctx));
  MB_ASSIGN(LinkPtr host, withContext(getLink(sk.get(), spec.host_ifname), ctx));
  const char* type = rtnl_link_get_type(host.get());
  if (!type || std::strcmp(type, "veth") != 0)
    return Error(EINVAL, ctx + ": " + spec.host_ifname + " is not a veth device");
  if (!(rtnl_link_get_flags(host.get()) & IFF_UP)) return Error(ENETDOWN, ctx + ": " + spec.host_ifname + " is down");

  PodNetwork out;
  out.netns_path = ns.path();
  out.host_ifindex = static_cast<uint32_t>(rtnl_link_get_ifindex(host.get()));
  out.host_mac = macOf(host.get());
  // IFLA_LINK of a veth is its peer's ifindex (in the peer's namespace).
  const uint32_t peer_ifindex = static_cast<uint32_t>(rtnl_link_get_link(host.get()));

  auto pod = ns.run([&]() -> Result<PodSide> {
    MB_ASSIGN(NlSockPtr psk, openSocket());
    MB_ASSIGN(LinkPtr link, getLink(psk.get(), spec.pod_ifname));
    PodSide side{static_cast<uint32_t>(rtnl_link_get_ifindex(link.get())), macOf(link.get())};
    if (side.ifindex != peer_ifindex)
      return Error(ENOENT, spec.pod_ifname + " (ifindex " + std::to_string(side.ifindex) + ") is not the peer of " +
                               spec.host_ifname + " (peer ifindex " + std::to_string(peer_ifindex) + ")");
    MB_ASSIGN(bool has_addr, hasAddress(psk.get(), side.ifindex, spec.ipv4_be));
    if (!has_addr) return Error(ENOENT, spec.pod_ifname + " lacks address " + ipv4HostOrderToString(ntohl(spec.ipv4_be)));
    MB_ASSIGN(bool has_default, hasRoute(psk.get(), 0, 0, RTN_UNICAST, side.ifindex));
    if (!has_default) return Error(ENOENT, "no default route via " + spec.pod_ifname);
    return side;
  });
  if (!pod.ok()) return pod.error().wrap(ctx + ": in " + spec.netns_name);
  out.pod_ifindex = pod->ifindex;
  out.pod_mac = pod->mac;

  MB_ASSIGN(bool has_route, withContext(hasRoute(sk.get(), spec.ipv4_be, 32, RTN_UNICAST, out.host_ifindex), ctx));
  if (!has_route)
    return Error(ENOENT, ctx + ": no host route " + ipv4HostOrderToString(ntohl(spec.ipv4_be)) + "/32 dev " + spec.host_ifname);
  return out;
}

std::string hostDevicePeerName(const std::string& name) {
  static const std::string kHost = "_host", kNet = "_net";
  if (name.size() > kHost.size() && name.compare(name.size() - kHost.size(), kHost.size(), kHost) == 0)
    return name.substr(0, name.size() - kHost.size()) + kNet;
  return name.substr(0, IFNAMSIZ - 1 - kNet.size()) + kNet;
}

Status ensureHostDevice(const std::string& name, uint32_t gateway_be) {
  const std::string ctx = "ensure host device " + name;
  MB_TRY_CTX(validateIfname(name), ctx);
  if (gateway_be == 0) return Error::invalid(ctx + ": gateway address must not be 0.0.0.0");
  const std::string peer_name = hostDevicePeerName(name);
  MB_ASSIGN(NlSockPtr sk, withContext(openSocket(), ctx));
  auto link = getLink(sk.get(), name);
  if (!link.ok()) {
    if (link.error().code != ENOENT) return link.error().wrap(ctx);
    // A veth pair rather than a dummy device: it is what Cilium does
    // (cilium_host/cilium_net) and veth is needed for pods anyway, while
    // CONFIG_DUMMY is missing from some minimal (VM/CI) kernels.
    LinkPtr veth(rtnl_link_veth_alloc());
    if (!veth) return Error(ENOMEM, ctx + ": out of memory");
    LinkPtr peer(rtnl_link_veth_get_peer(veth.get()));
    rtnl_link_set_name(veth.get(), name.c_str());
    rtnl_link_set_name(peer.get(), peer_name.c_str());
    Status st = request(sk.get(), "create veth " + name + "/" + peer_name, [&](nl_msg** m) {
      return rtnl_link_build_add_request(veth.get(), NLM_F_CREATE | NLM_F_EXCL, m);
    });
    // EEXIST: a concurrent ensure won the race; verify below like any
    // pre-existing device.
    if (!st.ok() && st.error().code != EEXIST) return st.error().wrap(ctx);
    link = getLink(sk.get(), name);
    if (!link.ok()) return link.error().wrap(ctx);
  }
  const char* type = rtnl_link_get_type(link->get());
  const bool is_veth = type && std::strcmp(type, "veth") == 0;
  const bool is_dummy = type && std::strcmp(type, "dummy") == 0;
  if (!is_veth && !is_dummy)
    return Error(EEXIST, ctx + ": " + name + " exists but is a " + (type ? type : "device without kind") +
                             ", not a veth or dummy device");
  const uint32_t ifindex = static_cast<uint32_t>(rtnl_link_get_ifindex(link->get()));
  if (is_veth) {
    // The peer only has to be up so the pair has carrier; it carries nothing.
    MB_ASSIGN(LinkPtr peer, withContext(getLink(sk.get(), peer_name), ctx + ": peer of " + name));
    MB_TRY_CTX(disableIpv6(peer_name), ctx);
    MB_TRY_CTX(setLink(sk.get(), static_cast<uint32_t>(rtnl_link_get_ifindex(peer.get())), peer_name, true, 0), ctx);
  }
  MB_TRY_CTX(disableIpv6(name), ctx);
  MB_TRY_CTX(addAddress(sk.get(), ifindex, name, gateway_be, 32), ctx);
  MB_TRY_CTX(setLink(sk.get(), ifindex, name, true, 0), ctx);
  return okStatus();
}

Status removeHostDevice(const std::string& name) {
  const std::string ctx = "remove host device " + name;
  MB_TRY_CTX(validateIfname(name), ctx);
  MB_ASSIGN(NlSockPtr sk, withContext(openSocket(), ctx));
  MB_TRY_CTX(deleteLink(sk.get(), name), ctx);
  return okStatus();
}

namespace {
Status checkPrefix(uint32_t cidr_be, uint8_t prefix_len) {
  if (prefix_len > 32) return Error::invalid("prefix length " + std::to_string(prefix_len) + " > 32");
  uint32_t host_mask = prefix_len == 0 ? 0xffffffffu : (prefix_len == 32 ? 0 : (0xffffffffu >> prefix_len));
  if (hostOrder(cidr_be) & host_mask)
    return Error::invalid(ipv4HostOrderToString(ntohl(cidr_be)) + "/" + std::to_string(prefix_len) + " has host bits set");
  return okStatus();
}
}  // namespace

Status ensureUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len) {
  MB_TRY_CTX(checkPrefix(cidr_be, prefix_len), "ensure unreachable route");
  MB_ASSIGN(NlSockPtr sk, withContext(openSocket(), "ensure unreachable route"));
  RouteSpec spec{.dst_be = cidr_be, .prefix_len = prefix_len, .type = RTN_UNREACHABLE};
  // REPLACE makes a second call a no-op instead of EEXIST.
  return addRoute(sk.get(), spec, "", NLM_F_CREATE | NLM_F_REPLACE);
}

Status removeUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len) {
  MB_TRY_CTX(checkPrefix(cidr_be, prefix_len), "remove unreachable route");
  MB_ASSIGN(NlSockPtr sk, withContext(openSocket(), "remove unreachable route"));
  RouteSpec spec{.dst_be = cidr_be, .prefix_len = prefix_len, .type = RTN_UNREACHABLE};
  return deleteRoute(sk.get(), spec, "");
}

Result<uint32_t> ifindexOf(const std::string& ifname) {
  MB_TRY(validateIfname(ifname));
  MB_ASSIGN(NlSockPtr sk, openSocket());
  MB_ASSIGN(LinkPtr link, getLink(sk.get(), ifname));
  return static_cast<uint32_t>(rtnl_link_get_ifindex(link.get()));
}

bool linkExists(const std::string& ifname) { return ifindexOf(ifname).ok(); }

}  // namespace membrane::kernel

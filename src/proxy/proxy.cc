// The public Proxy API (proxy.h) over Proxy::Impl (proxy_impl.h): creation,
// start/stop of the loop thread, and the calls any thread may make.
#include "src/proxy/proxy.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <thread>

#include "src/proxy/proxy_impl.h"

namespace membrane::proxy {

Proxy::Proxy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Proxy::~Proxy() { stop(); }

Result<std::unique_ptr<Proxy>> Proxy::create(ProxyOptions opts) {
  if (opts.buffer_size <= opts.limits.max_header_bytes + 1024)
    return Error::invalid("proxy: buffer_size must exceed max_header_bytes + 1024");
  if (opts.max_pipelined == 0) return Error::invalid("proxy: max_pipelined must be positive");
  auto impl = std::make_unique<Impl>(std::move(opts));
  impl->ep.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!impl->ep) return Error::fromErrno(errno, "proxy: epoll_create1");
  impl->wake.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!impl->wake) return Error::fromErrno(errno, "proxy: eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTagWake;
  epoll_ctl(impl->ep.get(), EPOLL_CTL_ADD, impl->wake.get(), &ev);
  return std::unique_ptr<Proxy>(new Proxy(std::move(impl)));
}

Status Proxy::applyConfig(std::shared_ptr<const ProxyConfig> cfg) {
  if (!cfg) return Error::invalid("proxy: null config");
  return impl_->apply(std::move(cfg));
}

std::shared_ptr<const ProxyConfig> Proxy::config() const {
  MutexLock lk(impl_->cfg_mu);
  return impl_->cfg;
}

Status Proxy::start() {
  MutexLock lk(impl_->listeners_mu);
  if (impl_->started) return Error::invalid("proxy: already started");
  impl_->started = true;
  impl_->thread = std::thread([this] { impl_->run(); });
  return okStatus();
}

void Proxy::stop() {
  if (!impl_->thread.joinable()) return;
  impl_->stopping = true;
  impl_->wakeLoop();
  impl_->thread.join();
}

uint16_t Proxy::boundPort(uint16_t configured_port, Direction d) const {
  MutexLock lk(impl_->listeners_mu);
  Listener l{configured_port, d};
  auto it = impl_->listeners.find(Impl::keyOf(l));
  return it == impl_->listeners.end() ? 0 : it->second->bound;
}

ProxyStats& Proxy::stats() { return impl_->stats; }
AccessLog& Proxy::accessLog() { return impl_->log; }
size_t Proxy::buffersInUse() const { return impl_->buffers_in_use.load(); }
size_t Proxy::buffersPeak() const { return impl_->buffers_peak.load(); }
void Proxy::resetBufferPeak() {
  impl_->reset_peak = true;
  impl_->wakeLoop();
}

}  // namespace membrane::proxy

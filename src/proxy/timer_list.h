// TimerList: the proxy's connection timeouts (header, connect, idle, linger),
// one intrusive list per timeout duration (proxy_impl.h, LoopState).
//
// Every timer of a list has the same duration, so deadlines are appended in
// increasing order and the head is always the next to expire: arming, disarming
// and finding the next deadline are O(1), with no allocation (the links live in
// the Conn, see connection.h).
//
// Thread-safety: none; the lists and the Conns they link belong to the loop thread.
#pragma once

#include <chrono>

namespace membrane::proxy {

using Clock = std::chrono::steady_clock;

struct Conn;

// One Conn's place in one TimerList (a member of Conn per list).
struct TimerLink {
  Conn* prev = nullptr;
  Conn* next = nullptr;
  Clock::time_point deadline;
  bool linked = false;
};

// Intrusive FIFO of connections with one timeout duration: deadlines are
// appended in increasing order, so the head is always the next to expire.
class TimerList {
 public:
  explicit TimerList(TimerLink Conn::*link) : link_(link) {}
  // (Re)arms 'c' at 'deadline', at the tail. Expiry looks at the head only,
  // so 'deadline' must be no earlier than any deadline in the list (checked):
  // arm every entry with now + the list's one timeout. A shorter timeout
  // needs a list of its own, else it fires no sooner than the entries before it.
  void arm(Conn* c, Clock::time_point deadline);
  void disarm(Conn* c);  // no-op when not armed
  Conn* front() const { return head_; }
  TimerLink& link(Conn* c) const;

 private:
  TimerLink Conn::*link_;
  Conn* head_ = nullptr;
  Conn* tail_ = nullptr;
};

}  // namespace membrane::proxy

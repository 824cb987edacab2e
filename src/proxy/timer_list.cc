#include "src/proxy/timer_list.h"

#include "membrane/result.h"
#include "src/proxy/connection.h"

namespace membrane::proxy {

TimerLink& TimerList::link(Conn* c) const { return c->*link_; }

void TimerList::arm(Conn* c, Clock::time_point deadline) {
  disarm(c);
  MB_CHECK(!tail_ || link(tail_).deadline <= deadline);
  TimerLink& l = link(c);
  l.deadline = deadline;
  l.linked = true;
  l.prev = tail_;
  l.next = nullptr;
  if (tail_) link(tail_).next = c;
  else head_ = c;
  tail_ = c;
}

void TimerList::disarm(Conn* c) {
  TimerLink& l = link(c);
  if (!l.linked) return;
  if (l.prev) link(l.prev).next = l.next;
  else head_ = l.next;
  if (l.next) link(l.next).prev = l.prev;
  else tail_ = l.prev;
  l.prev = l.next = nullptr;
  l.linked = false;
}

}  // namespace membrane::proxy

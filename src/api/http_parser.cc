#include "src/api/http_parser.h"

#include <llhttp.h>

#include <fmt/format.h>

namespace membrane::api {

struct MessageParser::Impl {
  llhttp_t parser;
  llhttp_settings_t settings;
  MessageParser* self = nullptr;

  static MessageParser& of(llhttp_t* p) { return *static_cast<Impl*>(p->data)->self; }

  // Callbacks return -1 (HPE_USER) after recording the HTTP status to answer:
  // llhttp then stops and feed() reports our status rather than a generic 400.
  static int fail(MessageParser& m, int status, std::string msg) {
    m.error_status_ = status;
    m.error_message_ = std::move(msg);
    return -1;
  }
  static int countHeader(MessageParser& m, size_t n) {
    m.header_bytes_ += n;
    if (m.header_bytes_ > m.limits_.max_header_bytes)
      return fail(m, 431, fmt::format("request line and headers exceed {} bytes", m.limits_.max_header_bytes));
    return 0;
  }

  static int onMessageBegin(llhttp_t* p) {
    of(p).started_ = true;
    return 0;
  }
  static int onUrl(llhttp_t* p, const char* at, size_t n) {
    auto& m = of(p);
    if (countHeader(m, n)) return -1;
    m.url.append(at, n);
    return 0;
  }
  static int onStatus(llhttp_t* p, const char*, size_t n) { return countHeader(of(p), n); }
  static int onHeaderField(llhttp_t* p, const char* at, size_t n) {
    auto& m = of(p);
    if (countHeader(m, n)) return -1;
    m.field_.append(at, n);
    return 0;
  }
  static int onHeaderValue(llhttp_t* p, const char* at, size_t n) {
    auto& m = of(p);
    if (countHeader(m, n)) return -1;
    m.value_.append(at, n);
    return 0;
  }
  static int onHeaderValueComplete(llhttp_t* p) {
    auto& m = of(p);
    auto it = m.headers.find(m.field_);
    if (it == m.headers.end())
      m.headers.emplace(std::move(m.field_), std::move(m.value_));
    else
      it->second += ", " + m.value_;
    m.field_.clear();
    m.value_.clear();
    return 0;
  }
  static int onHeadersComplete(llhttp_t* p) {
    auto& m = of(p);
    m.headers_complete_ = true;
    if (m.type_ == Type::Request) {
      m.method = llhttp_method_name(static_cast<llhttp_method_t>(p->method));
      auto it = m.headers.find("expect");
      m.expect_continue_ = it != m.headers.end() && CaseInsensitiveLess::equal(it->second, "100-continue");
    } else {
      m.status = p->status_code;
    }
    if (!m.on_body && (p->flags & F_CONTENT_LENGTH) && p->content_length > m.limits_.max_body_bytes)
      return fail(m, 413, fmt::format("request body of {} bytes exceeds the limit of {} bytes", p->content_length,
                                      m.limits_.max_body_bytes));
    return 0;
  }
  static int onBody(llhttp_t* p, const char* at, size_t n) {
    auto& m = of(p);
    if (m.on_body) return m.on_body(std::string_view(at, n)) ? 0 : fail(m, 400, "body consumer stopped");
    if (m.body.size() + n > m.limits_.max_body_bytes)
      return fail(m, 413, fmt::format("request body exceeds the limit of {} bytes", m.limits_.max_body_bytes));
    m.body.append(at, n);
    return 0;
  }
  static int onMessageComplete(llhttp_t* p) {
    auto& m = of(p);
    m.state_ = State::Complete;
    m.keep_alive_ = llhttp_should_keep_alive(p) != 0;
    // Pause so that feed() stops at the end of this message: the bytes after
    // it are the next pipelined request and must wait for this one's answer.
    return HPE_PAUSED;
  }
};

MessageParser::MessageParser(Type type, Limits limits) : impl_(std::make_unique<Impl>()), type_(type), limits_(limits) {
  llhttp_settings_init(&impl_->settings);
  impl_->settings.on_message_begin = Impl::onMessageBegin;
  impl_->settings.on_url = Impl::onUrl;
  impl_->settings.on_status = Impl::onStatus;
  impl_->settings.on_header_field = Impl::onHeaderField;
  impl_->settings.on_header_value = Impl::onHeaderValue;
  impl_->settings.on_header_value_complete = Impl::onHeaderValueComplete;
  impl_->settings.on_headers_complete = Impl::onHeadersComplete;
  impl_->settings.on_body = Impl::onBody;
  impl_->settings.on_message_complete = Impl::onMessageComplete;
  llhttp_init(&impl_->parser, type == Type::Request ? HTTP_REQUEST : HTTP_RESPONSE, &impl_->settings);
  impl_->parser.data = impl_.get();
  impl_->self = this;
}

MessageParser::~MessageParser() = default;

size_t MessageParser::feed(std::string_view data) {
  if (state_ != State::Incomplete || data.empty()) return 0;
  llhttp_errno_t err = llhttp_execute(&impl_->parser, data.data(), data.size());
  if (err == HPE_OK) return data.size();
  const char* pos = llhttp_get_error_pos(&impl_->parser);
  size_t consumed = pos ? static_cast<size_t>(pos - data.data()) : data.size();
  if (consumed > data.size()) consumed = data.size();
  if (err == HPE_PAUSED && state_ == State::Complete) return consumed;
  state_ = State::Error;
  if (error_status_ == 0) {
    error_status_ = 400;
    const char* reason = llhttp_get_error_reason(&impl_->parser);
    error_message_ = fmt::format("malformed HTTP message: {} ({})", llhttp_errno_name(err), reason ? reason : "");
  }
  return consumed;
}

MessageParser::State MessageParser::finish() {
  if (state_ != State::Incomplete) return state_;
  llhttp_errno_t err = llhttp_finish(&impl_->parser);
  if (state_ == State::Complete) return state_;
  if (err != HPE_OK || started_) {
    state_ = State::Error;
    error_status_ = 400;
    error_message_ = "connection closed before the message was complete";
  }
  return state_;
}

void MessageParser::next() {
  if (state_ == State::Complete) llhttp_resume(&impl_->parser);
  state_ = State::Incomplete;
  started_ = headers_complete_ = expect_continue_ = keep_alive_ = false;
  error_status_ = 0;
  error_message_.clear();
  header_bytes_ = 0;
  field_.clear();
  value_.clear();
  method.clear();
  url.clear();
  status = 0;
  headers.clear();
  body.clear();
}

}  // namespace membrane::api

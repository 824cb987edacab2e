#include "src/proxy/message_parser.h"

#include <cstring>

namespace membrane::proxy {

namespace {
MessageParser* self(llhttp_t* p) { return static_cast<MessageParser*>(p->data); }
}  // namespace

MessageParser::MessageParser(Kind kind, ParserLimits limits) : kind_(kind), limits_(limits) {
  llhttp_settings_init(&settings_);
  settings_.on_message_begin = &MessageParser::onMessageBegin;
  settings_.on_url = &MessageParser::onUrl;
  settings_.on_status = &MessageParser::onStatus;
  settings_.on_header_field = &MessageParser::onHeaderField;
  settings_.on_header_value = &MessageParser::onHeaderValue;
  settings_.on_header_value_complete = &MessageParser::onHeaderValueComplete;
  settings_.on_headers_complete = &MessageParser::onHeadersComplete;
  settings_.on_message_complete = &MessageParser::onMessageComplete;
  fields_.resize(16);
  reset();
}

void MessageParser::reset() {
  llhttp_init(&parser_, kind_ == Kind::Request ? HTTP_REQUEST : HTTP_RESPONSE, &settings_);
  parser_.data = this;
  in_message_ = headers_done_ = in_value_ = false;
  pending_ = Event::NeedMore;
  error_status_ = 0;
  error_reason_ = {};
}

int MessageParser::onMessageBegin(llhttp_t* p) {
  MessageParser* s = self(p);
  s->in_message_ = true;
  s->headers_done_ = false;
  s->in_value_ = false;
  s->header_bytes_ = 0;
  s->url_.clear();
  s->nfields_ = 0;
  s->currentField().name.clear();
  s->currentField().value.clear();
  s->status_ = 0;
  s->expect_continue_ = s->has_body_ = s->upgrade_ = false;
  s->keep_alive_ = true;
  return 0;
}

int MessageParser::addHeaderBytes(size_t n) {
  header_bytes_ += n;
  if (header_bytes_ > limits_.max_header_bytes) {
    error_status_ = 431;
    error_reason_ = "request headers too large";
    return HPE_USER;
  }
  return 0;
}

HeaderField& MessageParser::currentField() {
  if (nfields_ >= fields_.size()) fields_.resize(fields_.size() * 2);
  return fields_[nfields_];
}

int MessageParser::onUrl(llhttp_t* p, const char* at, size_t len) {
  MessageParser* s = self(p);
  if (int r = s->addHeaderBytes(len)) return r;
  s->url_.append(at, len);
  return 0;
}

int MessageParser::onStatus(llhttp_t* p, const char*, size_t len) { return self(p)->addHeaderBytes(len); }

int MessageParser::onHeaderField(llhttp_t* p, const char* at, size_t len) {
  MessageParser* s = self(p);
  if (int r = s->addHeaderBytes(len)) return r;
  if (s->kind_ == Kind::Response) return 0;  // responses: only framing matters
  s->currentField().name.append(at, len);
  return 0;
}

int MessageParser::onHeaderValue(llhttp_t* p, const char* at, size_t len) {
  MessageParser* s = self(p);
  if (int r = s->addHeaderBytes(len)) return r;
  if (s->kind_ == Kind::Response) return 0;
  s->in_value_ = true;
  s->currentField().value.append(at, len);
  return 0;
}

int MessageParser::onHeaderValueComplete(llhttp_t* p) {
  MessageParser* s = self(p);
  if (int r = s->addHeaderBytes(4)) return r;
  if (s->kind_ == Kind::Response) return 0;
  s->in_value_ = false;
  if (s->nfields_ + 1 > s->limits_.max_headers) {
    s->error_status_ = 431;
    s->error_reason_ = "too many request headers";
    return HPE_USER;
  }
  ++s->nfields_;
  // Slot for the next field starts empty but keeps its capacity.
  HeaderField& next = s->currentField();
  next.name.clear();
  next.value.clear();
  return 0;
}

int MessageParser::onHeadersComplete(llhttp_t* p) {
  MessageParser* s = self(p);
  s->headers_done_ = true;
  s->method_ = p->method;
  s->status_ = p->status_code;
  s->major_ = p->http_major;
  s->minor_ = p->http_minor;
  s->keep_alive_ = llhttp_should_keep_alive(p) != 0;
  s->has_body_ = (p->flags & (F_CHUNKED | F_CONTENT_LENGTH)) && !(p->flags & F_CONTENT_LENGTH && p->content_length == 0);
  if (s->kind_ == Kind::Request) {
    for (size_t i = 0; i < s->nfields_; ++i) {
      const HeaderField& f = s->fields_[i];
      if (headerNameEquals(f.name, "expect") && f.value.size() == 12 &&
          strncasecmp(f.value.data(), "100-continue", 12) == 0)
        s->expect_continue_ = true;
    }
    s->pending_ = Event::HeadersComplete;
    return HPE_PAUSED;
  }
  // Response framing that depends on the request.
  if (s->status_ >= 100 && s->status_ < 200) return 0;  // interim; 101 is an upgrade
  if (s->hint_connect_ && s->status_ >= 200 && s->status_ < 300) return 2;  // tunnel, no body
  if (s->hint_head_) return 1;                                               // no body
  return 0;
}

int MessageParser::onMessageComplete(llhttp_t* p) {
  MessageParser* s = self(p);
  s->in_message_ = false;
  s->upgrade_ = llhttp_get_upgrade(p) != 0;
  if (s->kind_ == Kind::Response && s->status_ == 101) s->upgrade_ = true;
  s->keep_alive_ = llhttp_should_keep_alive(p) != 0;
  s->pending_ = s->upgrade_ ? Event::Upgrade : Event::MessageComplete;
  return HPE_PAUSED;
}

MessageParser::Step MessageParser::execute(const char* data, size_t len) {
  if (error_status_) return {Event::Error, 0};
  static const char kNothing[1] = {0};
  if (!data) data = kNothing;
  pending_ = Event::NeedMore;
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  if (err == HPE_OK) return {Event::NeedMore, len};
  const char* pos = llhttp_get_error_pos(&parser_);
  size_t consumed = pos && pos >= data && pos <= data + len ? static_cast<size_t>(pos - data) : len;
  if (err == HPE_PAUSED) {
    llhttp_resume(&parser_);
    return {pending_, consumed};
  }
  if (err == HPE_PAUSED_UPGRADE) return {Event::Upgrade, consumed};
  if (!error_status_) {
    error_status_ = 400;
    error_reason_ = llhttp_get_error_reason(&parser_) ? llhttp_get_error_reason(&parser_) : "malformed";
  }
  return {Event::Error, consumed};
}

MessageParser::Step MessageParser::finish() {
  if (error_status_) return {Event::Error, 0};
  bool was_in_message = in_message_;
  pending_ = Event::NeedMore;
  llhttp_errno_t err = llhttp_finish(&parser_);
  if (pending_ == Event::MessageComplete || pending_ == Event::Upgrade) {
    if (err == HPE_PAUSED) llhttp_resume(&parser_);
    return {pending_, 0};
  }
  if (err == HPE_OK && !was_in_message) return {Event::NeedMore, 0};
  error_status_ = 400;
  error_reason_ = "message cut short";
  return {Event::Error, 0};
}

std::string_view MessageParser::method() const {
  return llhttp_method_name(static_cast<llhttp_method_t>(method_));
}
bool MessageParser::isHead() const { return method_ == HTTP_HEAD; }
bool MessageParser::isConnect() const { return method_ == HTTP_CONNECT; }

std::string_view MessageParser::host() const {
  for (size_t i = 0; i < nfields_; ++i)
    if (headerNameEquals(fields_[i].name, "host")) return fields_[i].value;
  return {};
}

}  // namespace membrane::proxy

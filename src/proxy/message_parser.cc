#include "src/proxy/message_parser.h"

#include <strings.h>

#include <cstring>

#include "membrane/http_field.h"

namespace membrane::proxy {

namespace {
MessageParser* self(llhttp_t* p) { return static_cast<MessageParser*>(p->data); }

using http::isTchar;

// A Host value: uri-host [":" port] (reg-name, IPv4 or IP-literal bytes).
bool hostChar(unsigned char c) {
  if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '-': case '.': case '_': case '~': case '!': case '$': case '&': case '\'': case '(': case ')':
    case '*': case '+': case ',': case ';': case '=': case ':': case '[': case ']': case '%':
      return true;
    default:
      return false;
  }
}

bool equalsNoCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

void trimOws(std::string& v) {
  size_t b = 0, e = v.size();
  while (b < e && (v[b] == ' ' || v[b] == '\t')) ++b;
  while (e > b && (v[e - 1] == ' ' || v[e - 1] == '\t')) --e;
  if (b == 0 && e == v.size()) return;
  v.erase(e);
  v.erase(0, b);
}
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
  settings_.on_chunk_header = &MessageParser::onChunkHeader;
  fields_.resize(16);
  reset();
}

void MessageParser::reset() {
  llhttp_init(&parser_, kind_ == Kind::Request ? HTTP_REQUEST : HTTP_RESPONSE, &settings_);
  parser_.data = this;
  in_message_ = headers_done_ = in_value_ = false;
  in_trailers_ = trailer_pause_ = false;
  head_.clear();
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
  trimOws(s->currentField().value);
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

// The last chunk ("0[;ext]" CRLF) of a request: pause so that execute()
// learns where the trailer section begins.
int MessageParser::onChunkHeader(llhttp_t* p) {
  MessageParser* s = self(p);
  if (s->kind_ != Kind::Request || p->content_length != 0) return 0;
  s->in_trailers_ = true;
  s->trailer_pause_ = true;
  s->trailer_.clear();
  s->trailer_checked_ = 0;
  return HPE_PAUSED;
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
  // Requests keep the raw bytes of their head for checkHead(): everything
  // consumed from "between messages" until the end of the headers.
  const bool head_phase = kind_ == Kind::Request && (!in_message_ || !headers_done_);
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  const char* pos = err == HPE_OK ? data + len : llhttp_get_error_pos(&parser_);
  size_t consumed = pos && pos >= data && pos <= data + len ? static_cast<size_t>(pos - data) : len;
  if (head_phase && !in_message_ && err == HPE_OK) {
    head_.clear();  // only empty lines between messages so far: nothing to keep
  } else if (head_phase) {
    // Whitespace (OWS, CRLFs) is not counted by addHeaderBytes(): bound the
    // raw copy separately so a flood of it cannot grow head_.
    if (head_.size() + consumed > 2 * limits_.max_header_bytes + 1024) {
      error_status_ = 431;
      error_reason_ = "request headers too large";
      return {Event::Error, consumed};
    }
    head_.append(data, consumed);
  }
  if (in_trailers_ && !trailer_pause_) {
    // Trailer bytes of this call: 'consumed' ends at MessageComplete or at
    // the end of the input. Each complete line is checked now, before the
    // caller forwards it; a bad line is not handed out.
    const size_t before = trailer_.size();
    if (before + consumed > limits_.max_header_bytes + 1024) {
      error_status_ = 431;
      error_reason_ = "request trailers too large";
      return {Event::Error, 0};
    }
    trailer_.append(data, consumed);
    size_t bad = 0;
    std::string_view why = checkTrailerLines(&bad);
    if (!why.empty()) {
      error_status_ = 400;
      error_reason_ = why;
      return {Event::Error, bad > before ? bad - before : 0};
    }
    if (err == HPE_PAUSED && pending_ != Event::NeedMore) {
      if (trailer_.size() < 2 || trailer_.compare(trailer_.size() - 2, 2, "\r\n") != 0) {
        error_status_ = 400;
        error_reason_ = "trailer section not ended by CRLF";
        return {Event::Error, 0};
      }
      in_trailers_ = false;
    }
  }
  if (err == HPE_OK) return {Event::NeedMore, len};
  if (err == HPE_PAUSED && trailer_pause_) {
    // The last-chunk line ended at 'consumed': go on with the trailers.
    trailer_pause_ = false;
    llhttp_resume(&parser_);
    Step rest = execute(data + consumed, len - consumed);
    return {rest.event, consumed + rest.consumed};
  }
  if (err == HPE_PAUSED) {
    llhttp_resume(&parser_);
    if (pending_ == Event::HeadersComplete) {
      std::string_view why = checkHead();
      if (!why.empty()) {
        error_status_ = 400;
        error_reason_ = why;
        return {Event::Error, consumed};
      }
    }
    if (!in_message_) head_.clear();
    return {pending_, consumed};
  }
  if (err == HPE_PAUSED_UPGRADE) return {Event::Upgrade, consumed};
  if (!error_status_) {
    error_status_ = 400;
    error_reason_ = llhttp_get_error_reason(&parser_) ? llhttp_get_error_reason(&parser_) : "malformed";
  }
  return {Event::Error, consumed};
}

std::string_view MessageParser::checkTrailerLines(size_t* bad_line) {
  for (;;) {
    const size_t start = trailer_checked_;
    const size_t lf = trailer_.find('\n', start);
    if (lf == std::string::npos) return {};
    *bad_line = start;
    std::string_view line(trailer_.data() + start, lf - start);  // without the LF
    if (line.empty() || line.back() != '\r') return "bare LF in the trailer section";
    line.remove_suffix(1);
    if (line.find('\r') != std::string_view::npos) return "bare CR in the trailer section";
    trailer_checked_ = lf + 1;
    if (line.empty()) continue;  // the end of the section (llhttp completes the message there)
    if (line[0] == ' ' || line[0] == '\t') return "obsolete line folding in the trailer section";
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return "trailer field line without a name and ':'";
    for (size_t i = 0; i < colon; ++i)
      if (!isTchar(static_cast<unsigned char>(line[i]))) return "invalid character in a trailer field name";
    for (size_t i = colon + 1; i < line.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(line[i]);
      if (c != '\t' && (c < 0x20 || c == 0x7F)) return "control character in a trailer field value";
    }
  }
}

std::string_view MessageParser::checkHead() {
  std::string_view h = head_;
  // Bare CR or LF anywhere: servers that accept them frame differently.
  for (size_t i = 0; i < h.size(); ++i) {
    if (h[i] == '\r' && (i + 1 == h.size() || h[i + 1] != '\n')) return "bare CR in the request head";
    if (h[i] == '\n' && (i == 0 || h[i - 1] != '\r')) return "bare LF in the request head";
  }
  while (h.size() >= 2 && h[0] == '\r' && h[1] == '\n') h.remove_prefix(2);  // empty lines before a request
  size_t eol = h.find("\r\n");
  if (eol == std::string_view::npos) return "request head without CRLF";
  std::string_view line = h.substr(0, eol);
  size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp1 == sp2) return "request line is not 'METHOD target HTTP/1.x'";
  std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                   version = line.substr(sp2 + 1);
  if (method.empty()) return "empty method";
  for (unsigned char c : method)
    if (!isTchar(c)) return "invalid character in the method";
  if (target.empty() || target.find(' ') != std::string_view::npos)
    return "request line is not 'METHOD target HTTP/1.x' (one space each)";
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return "HTTP version other than 1.0 or 1.1";
  h.remove_prefix(eol + 2);
  // Field lines up to the empty line.
  while (!h.empty() && !(h.size() >= 2 && h[0] == '\r' && h[1] == '\n')) {
    eol = h.find("\r\n");
    if (eol == std::string_view::npos) return "field line without CRLF";
    line = h.substr(0, eol);
    if (line[0] == ' ' || line[0] == '\t') return "obsolete line folding (a field line starting with whitespace)";
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return "field line without ':'";
    if (colon == 0) return "empty field name";
    for (size_t i = 0; i < colon; ++i) {
      unsigned char c = static_cast<unsigned char>(line[i]);
      if (c == ' ' || c == '\t') return "whitespace between a field name and ':'";
      if (!isTchar(c)) return "invalid character in a field name";
    }
    for (size_t i = colon + 1; i < line.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(line[i]);
      if (c != '\t' && (c < 0x20 || c == 0x7F)) return "control character in a field value";
    }
    h.remove_prefix(eol + 2);
  }
  // Semantics (RFC 9112 3.2, 6.1, 6.3), on the fields llhttp split.
  size_t hosts = 0, lengths = 0, encodings = 0;
  std::string_view te;
  for (size_t i = 0; i < nfields_; ++i) {
    const HeaderField& f = fields_[i];
    if (headerNameEquals(f.name, "host")) {
      ++hosts;
      for (unsigned char c : f.value)
        if (!hostChar(c)) return "invalid character in Host";
    } else if (headerNameEquals(f.name, "content-length")) {
      ++lengths;
    } else if (headerNameEquals(f.name, "transfer-encoding")) {
      ++encodings;
      te = f.value;
    }
  }
  if (hosts > 1) return "more than one Host field";
  if (hosts == 0 && version == "HTTP/1.1") return "HTTP/1.1 request without Host";
  if (lengths > 1) return "more than one Content-Length field";
  if (encodings > 0) {
    if (version == "HTTP/1.0") return "Transfer-Encoding in an HTTP/1.0 request";
    if (encodings > 1 || !equalsNoCase(te, "chunked")) return "Transfer-Encoding other than exactly 'chunked'";
    if (lengths > 0) return "both Content-Length and Transfer-Encoding";
  }
  if (method_ == HTTP_CONNECT) return "CONNECT is not supported (authority-form request target)";
  if (std::string_view why = normalizeTarget(url_, limits_.escaped_slashes, &norm_); !why.empty()) return why;
  if (norm_.absolute && !equalsNoCase(norm_.authority, host())) return "absolute-form target's host differs from Host";
  return {};
}

void MessageParser::serializeHead(std::string* out, std::span<const HeaderMatch* const> edits) const {
  out->clear();
  out->append(method());
  out->push_back(' ');
  if (norm_.absolute) {
    out->append("http://");
    out->append(norm_.authority);
  }
  out->append(norm_.target);
  out->append(minor_ == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");
  auto line = [&](std::string_view name, std::string_view value) {
    out->append(name);
    out->append(": ");
    out->append(value);
    out->append("\r\n");
  };
  for (size_t i = 0; i < nfields_; ++i) {
    // Any DELETE/REPLACE of its name drops a field the client sent.
    bool dropped = false;
    for (const HeaderMatch* e : edits)
      dropped = dropped || (e->mismatch != Mismatch::Add && headerNameEquals(e->name, fields_[i].name));
    if (!dropped) line(fields_[i].name, fields_[i].value);
  }
  // Fields the edits add, in order; a later DELETE/REPLACE of the same name
  // drops what an earlier ADD/REPLACE added.
  for (size_t k = 0; k < edits.size(); ++k) {
    const HeaderMatch* e = edits[k];
    if (e->mismatch != Mismatch::Add && e->mismatch != Mismatch::Replace) continue;
    bool dropped = false;
    for (size_t later = k + 1; later < edits.size(); ++later)
      dropped = dropped || (edits[later]->mismatch != Mismatch::Add && headerNameEquals(edits[later]->name, e->name));
    if (!dropped) line(e->name, e->value);
  }
  out->append("\r\n");
}

MessageParser::Step MessageParser::finish() {
  if (error_status_) return {Event::Error, 0};
  bool was_in_message = in_message_;
  pending_ = Event::NeedMore;
  llhttp_errno_t err = llhttp_finish(&parser_);
  if (pending_ == Event::MessageComplete || pending_ == Event::Upgrade) {
    if (err == HPE_PAUSED) llhttp_resume(&parser_);
    head_.clear();
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

#include "src/proxy/fuzz/reference_framer.h"

#include <strings.h>

namespace membrane::proxy {

namespace {

enum class Step { Ok, More, Bad };

bool isTchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}
bool isFieldByte(unsigned char c) { return c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7F); }
bool isHex(unsigned char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

class Framer {
 public:
  explicit Framer(std::string_view s) : s_(s) {}

  // One line ending in CRLF from pos_; a CR or LF anywhere else is Bad.
  Step line(std::string_view* out) {
    for (size_t i = pos_; i < s_.size(); ++i) {
      if (s_[i] == '\n') return fail("bare LF");
      if (s_[i] != '\r') continue;
      if (i + 1 == s_.size()) return Step::More;
      if (s_[i + 1] != '\n') return fail("bare CR");
      *out = s_.substr(pos_, i - pos_);
      pos_ = i + 2;
      return Step::Ok;
    }
    return Step::More;
  }

  Step requestLine() {
    std::string_view l;
    if (Step st = line(&l); st != Step::Ok) return st;
    size_t sp1 = l.find(' ');
    if (sp1 == 0 || sp1 == std::string_view::npos) return fail("request line without method");
    for (size_t i = 0; i < sp1; ++i)
      if (!isTchar(static_cast<unsigned char>(l[i]))) return fail("method byte");
    size_t sp2 = l.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || sp2 == sp1 + 1) return fail("request line without target");
    for (size_t i = sp1 + 1; i < sp2; ++i) {
      unsigned char c = static_cast<unsigned char>(l[i]);
      if (c < 0x21 || c > 0x7E) return fail("target byte");
    }
    std::string_view version = l.substr(sp2 + 1);
    if (version != "HTTP/1.1" && version != "HTTP/1.0") return fail("version");
    return Step::Ok;
  }

  // Field lines up to the empty line. Counts the framing fields when asked.
  Step fields(bool framing) {
    for (;;) {
      std::string_view l;
      if (Step st = line(&l); st != Step::Ok) return st;
      if (l.empty()) return Step::Ok;
      size_t colon = l.find(':');
      if (colon == 0 || colon == std::string_view::npos) return fail("field without name or ':'");
      for (size_t i = 0; i < colon; ++i)
        if (!isTchar(static_cast<unsigned char>(l[i]))) return fail("field-name byte (or obs-fold)");
      std::string_view v = l.substr(colon + 1);
      for (unsigned char c : v)
        if (!isFieldByte(c)) return fail("field-value byte");
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
      if (!framing) continue;
      std::string_view name = l.substr(0, colon);
      if (name.size() == 14 && strncasecmp(name.data(), "content-length", 14) == 0) {
        ++lengths_;
        if (v.empty() || v.size() > 18) return fail("Content-Length value");
        length_ = 0;
        for (char c : v) {
          if (c < '0' || c > '9') return fail("Content-Length value");
          length_ = length_ * 10 + static_cast<size_t>(c - '0');
        }
      } else if (name.size() == 17 && strncasecmp(name.data(), "transfer-encoding", 17) == 0) {
        ++encodings_;
        if (v.size() != 7 || strncasecmp(v.data(), "chunked", 7) != 0) return fail("Transfer-Encoding value");
      }
    }
  }

  Step chunkedBody() {
    for (;;) {
      std::string_view l;
      if (Step st = line(&l); st != Step::Ok) return st;
      size_t i = 0, size = 0;
      while (i < l.size() && isHex(static_cast<unsigned char>(l[i]))) {
        if (i == 15) return fail("chunk size too long");
        char c = l[i++];
        size = size * 16 + static_cast<size_t>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
      }
      if (i == 0) return fail("chunk size");
      std::string_view ext = l.substr(i);
      while (!ext.empty() && (ext.front() == ' ' || ext.front() == '\t')) ext.remove_prefix(1);  // BWS
      if (!ext.empty() && ext.front() != ';') return fail("bytes after the chunk size");
      for (unsigned char c : ext)
        if (!isFieldByte(c)) return fail("chunk-ext byte");
      if (size == 0) return fields(false);  // trailer section
      if (s_.size() - pos_ < size + 2) return Step::More;
      pos_ += size;
      if (s_[pos_] != '\r' || s_[pos_ + 1] != '\n') return fail("chunk data not followed by CRLF");
      pos_ += 2;
    }
  }

  Step message(FramedRequest* out) {
    const size_t start = pos_;
    lengths_ = encodings_ = 0;
    length_ = 0;
    if (Step st = requestLine(); st != Step::Ok) return st;
    if (Step st = fields(true); st != Step::Ok) return st;
    out->head = s_.substr(start, pos_ - start);
    const size_t body_start = pos_;
    if (lengths_ > 1 || encodings_ > 1) return fail("repeated framing field");
    if (lengths_ && encodings_) return fail("Content-Length with Transfer-Encoding");
    if (encodings_) {
      if (Step st = chunkedBody(); st != Step::Ok) return st;
    } else if (lengths_) {
      if (s_.size() - pos_ < length_) return Step::More;
      pos_ += length_;
    }
    out->body_raw = pos_ - body_start;
    return Step::Ok;
  }

  size_t pos() const { return pos_; }
  const std::string& why() const { return why_; }

 private:
  Step fail(const char* why) {
    why_ = why;
    return Step::Bad;
  }

  std::string_view s_;
  size_t pos_ = 0;
  size_t lengths_ = 0, encodings_ = 0, length_ = 0;
  std::string why_;
};

}  // namespace

FrameResult frameRequests(std::string_view stream, std::vector<FramedRequest>* out, std::string* why) {
  out->clear();
  Framer f(stream);
  while (f.pos() < stream.size()) {
    FramedRequest r;
    switch (f.message(&r)) {
      case Step::Ok: out->push_back(r); break;
      case Step::More: return FrameResult::Incomplete;
      case Step::Bad:
        *why = f.why() + " at byte " + std::to_string(f.pos());
        return FrameResult::Invalid;
    }
  }
  return FrameResult::Complete;
}

}  // namespace membrane::proxy

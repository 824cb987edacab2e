// Buffer and BufferPool: fixed-size byte buffers for the proxy's connections.
//
// Every connection direction owns at most one Buffer while it has bytes in
// flight and gives it back to the pool when it drains, so an idle connection
// holds no buffer memory and a busy one never allocates per request (the pool
// keeps released blocks for reuse). Capacity is fixed: a full buffer is the
// backpressure signal (stop reading from the side that fills it).
//
// Thread-safety: none; a pool and its buffers belong to the proxy's loop thread.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <vector>

namespace membrane::proxy {

class BufferPool {
 public:
  explicit BufferPool(size_t block_size, size_t max_free = 1024) : block_size_(block_size), max_free_(max_free) {}
  size_t blockSize() const { return block_size_; }

  std::unique_ptr<char[]> acquire() {
    ++in_use_;
    if (in_use_ > peak_in_use_) peak_in_use_ = in_use_;
    if (!free_.empty()) {
      auto b = std::move(free_.back());
      free_.pop_back();
      return b;
    }
    return std::unique_ptr<char[]>(new char[block_size_]);
  }
  void release(std::unique_ptr<char[]> b) {
    if (!b) return;
    --in_use_;
    if (free_.size() < max_free_) free_.push_back(std::move(b));
  }
  size_t inUse() const { return in_use_; }
  size_t peakInUse() const { return peak_in_use_; }
  void resetPeak() { peak_in_use_ = in_use_; }

 private:
  size_t block_size_;
  size_t max_free_;
  size_t in_use_ = 0;
  size_t peak_in_use_ = 0;
  std::vector<std::unique_ptr<char[]>> free_;
};

// Linear buffer: readable bytes are [begin_, end_); space is made at the end
// by moving the readable bytes to the front when needed.
class Buffer {
 public:
  explicit Buffer(BufferPool* pool) : pool_(pool) {}
  ~Buffer() { releaseBlock(); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  size_t capacity() const { return pool_->blockSize(); }
  size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }
  bool full() const { return size() == capacity(); }
  size_t freeSpace() const { return capacity() - size(); }
  const char* data() const { return block_ ? block_.get() + begin_ : kEmpty; }

  // Contiguous writable space at the end (compacts; takes a block if none).
  char* writePtr(size_t* avail) {
    ensureBlock();
    if (end_ == capacity() && begin_ > 0) compact();
    *avail = capacity() - end_;
    return block_.get() + end_;
  }
  void commit(size_t n) { end_ += n; }
  // Appends min(n, freeSpace()) bytes; returns how many were taken.
  size_t append(const char* p, size_t n) {
    if (n == 0) return 0;
    ensureBlock();
    if (capacity() - end_ < n && begin_ > 0) compact();
    size_t k = std::min(n, capacity() - end_);
    std::memcpy(block_.get() + end_, p, k);
    end_ += k;
    return k;
  }
  // Drops n readable bytes from the front; gives the block back when empty.
  void consume(size_t n) {
    begin_ += n;
    if (begin_ >= end_) clear();
  }
  void clear() {
    begin_ = end_ = 0;
    releaseBlock();
  }

 private:
  static constexpr const char* kEmpty = "";
  void ensureBlock() {
    if (!block_) block_ = pool_->acquire();
  }
  void releaseBlock() {
    if (block_) pool_->release(std::move(block_));
  }
  void compact() {
    std::memmove(block_.get(), block_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }

  BufferPool* pool_;
  std::unique_ptr<char[]> block_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace membrane::proxy

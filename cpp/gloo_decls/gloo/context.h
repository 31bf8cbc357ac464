#pragma once
// See ../README.md: only what ProcessGroupGloo.hpp names (its inline setTimeout calls this).
#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
} // namespace gloo

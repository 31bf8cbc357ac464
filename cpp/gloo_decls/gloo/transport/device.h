#pragma once
// See ../../README.md: only what ProcessGroupGloo.hpp names.
namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
} // namespace transport
} // namespace gloo

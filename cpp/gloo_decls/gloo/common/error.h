#pragma once
// See ../../README.md: only what ProcessGroupGloo.hpp names.

# dino-stream: `make run` trains the quickstart; `make test` runs the suite. Both install what is
# missing first (Debian packages, a project-local Python venv with the torch that provides
# libtorch), so a fresh machine needs nothing else. A second run skips what is done.

SHELL := /bin/bash
VENV := $(CURDIR)/.venv
PYTHON := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev \
	libswscale-dev libavfilter-dev libavdevice-dev libswresample-dev ffmpeg libturbojpeg0-dev \
	dataset-fashion-mnist prometheus curl

# torch-sys finds libtorch through the venv's python; build.rs bakes its path into the binary.
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(VENV)/bin:$(PATH)
export DINO_STREAM_PYTHON := $(PYTHON)

BIN := target/release/dino-stream

.PHONY: setup apt venv build install run test lint fmt bench bench-pipeline bench-train gpu-bin clean

setup: apt venv

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

# torch's CUDA wheels are about 3.5 GB to download and 5 GB installed. --no-cache-dir keeps pip
# from leaving a second copy of every wheel in ~/.cache/pip (a CI run once ran out of disk here).
VENV_NEEDS_GB := 9

$(VENV)/.installed: requirements.txt
	@test -x $(PYTHON) || python3 -m venv $(VENV)
	@free_gb=$$(df -Pk $(VENV) | awk 'NR == 2 {print int($$4 / 1048576)}'); \
	if [ "$$free_gb" -lt $(VENV_NEEDS_GB) ]; then \
		echo "warning: $$free_gb GB free on the disk of $(VENV); installing torch==2.11.0 needs about $(VENV_NEEDS_GB) GB at its peak" >&2; \
	fi
	$(PYTHON) -m pip install -q --no-cache-dir --upgrade pip
	$(PYTHON) -m pip install -q --no-cache-dir -r requirements.txt
	touch $@

build: setup
	cargo build --release --bins

# Puts dino-stream on the PATH (~/.local/bin by default). The binary finds libtorch through the
# rpath to this checkout's .venv, so keep the checkout where it is.
PREFIX ?= $(HOME)/.local
install: build
	install -D -m 755 $(BIN) $(PREFIX)/bin/dino-stream
	@echo "installed $(PREFIX)/bin/dino-stream"

# A binary for a GPU machine (scripts/gpu-check.sh): no FFmpeg (that machine lacks Debian's
# FFmpeg 5.1), stripped to about 10 MB so it fits the device tool's 64 MiB transfer, with the
# system libjpeg-turbo beside it in .gpu/lib.
gpu-bin: setup
	cargo build --release --no-default-features --bin dino-stream --target-dir target/gpu
	mkdir -p .gpu/lib && strip -o .gpu/dino-stream target/gpu/release/dino-stream
	ldd target/gpu/release/dino-stream | awk '/libturbojpeg/ {print $$3}' | xargs -r -I{} cp -L {} .gpu/lib/

run: build
	$(BIN) run pipelines/quickstart.toml

# The numeric checks run a second time on the AVX2 kernel paths of libtorch (ATen, oneDNN, MKL)
# and of our own pixel kernels, so a tolerance fitted to one CPU's kernels fails here, on any
# machine, instead of on the next user's CPU (see docs/ARCHITECTURE.md, "Numeric tests").
ISA_AVX2 := ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 DINO_STREAM_CPU_ISA=avx2
NUMERIC_TESTS := --lib --test engine_reference --test augment_reference

test: build
	cargo test --release --lib --bins --tests -- --test-threads=2
	$(ISA_AVX2) cargo test --release $(NUMERIC_TESTS) -- --test-threads=2

lint: setup
	cargo fmt --all -- --check
	cargo clippy --release --all-targets -- -D warnings

bench: bench-pipeline bench-train

bench-pipeline: build
	$(BIN) bench pipeline pipelines/quickstart.toml --seconds 10

bench-train: build
	$(BIN) bench train pipelines/quickstart.toml --steps 20

clean:
	cargo clean
	rm -rf runs

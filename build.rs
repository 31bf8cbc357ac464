//! Links libtorch so that the binary runs with no environment set, and the system
//! libjpeg-turbo when there is one.
//!
//! torch-sys finds libtorch (from the project venv's PyPI torch when `LIBTORCH_USE_PYTORCH=1`)
//! and exports its library directory as `DEP_TCH_LIBTORCH_LIB`. We bake that directory into the
//! binary's rpath, and force-link `libtorch` with `--no-as-needed`: without it the linker drops
//! `libtorch.so` (no symbol is referenced directly), and with it `libtorch_cuda.so` is never
//! loaded, so CUDA would be invisible on a GPU machine. This mirrors tch's own examples.
//!
//! It also compiles `cpp/c10d.cpp`, the shim over libtorch's c10d that `src/dist` wraps.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    link_turbojpeg();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        return;
    }
    if let Some(lib_dir) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        build_c10d(Path::new(&lib_dir));
    }
    if let Some(lib_dir) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        println!(
            "cargo:rustc-link-arg=-Wl,-rpath={}",
            lib_dir.to_string_lossy()
        );
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
}

/// Links the system libjpeg-turbo (TurboJPEG 2.x API) when pkg-config finds it, and sets
/// `cfg(turbojpeg)` so that `decode` uses it for ordinary JPEGs. Without it (no
/// `libturbojpeg0-dev`, or `DINO_STREAM_NO_TURBOJPEG` set) every image decodes with the image
/// crate: the same behaviour on bad input, slower JPEGs.
fn link_turbojpeg() {
    println!("cargo:rustc-check-cfg=cfg(turbojpeg)");
    println!("cargo:rerun-if-env-changed=DINO_STREAM_NO_TURBOJPEG");
    if std::env::var_os("DINO_STREAM_NO_TURBOJPEG").is_some() {
        return;
    }
    match pkg_config::Config::new()
        .atleast_version("2.0")
        .probe("libturbojpeg")
    {
        Ok(_) => println!("cargo:rustc-cfg=turbojpeg"),
        Err(e) => println!(
            "cargo:warning=libturbojpeg not found ({e}): JPEGs decode with the image crate, \
             slower (Debian: apt-get install libturbojpeg0-dev)"
        ),
    }
}

/// Compiles the c10d shim against the headers of the libtorch torch-sys links (`torch/include`
/// beside `torch/lib`, in a PyPI wheel and in a libtorch archive alike), with the C++ ABI that
/// libtorch was built with, and links the libraries that export c10d (ProcessGroupGloo and
/// TCPStore live in libtorch_cpu). One file of ~250 lines: ~15 s of one core, and cargo reruns
/// it only when the shim, its gloo declarations or this script change.
fn build_c10d(lib_dir: &Path) {
    println!("cargo:rerun-if-changed=cpp/c10d.cpp");
    println!("cargo:rerun-if-changed=cpp/gloo_decls");
    println!("cargo:rerun-if-env-changed=DINO_STREAM_CUDA_INCLUDE");
    let root = lib_dir.parent().unwrap_or(lib_dir);
    let include = root.join("include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .opt_level(2)
        .warnings(false)
        .debug(false)
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi().as_str())
        .include("cpp/gloo_decls")
        .include(&include)
        .include(include.join("torch/csrc/api/include"));
    let nccl = nccl_includes(root);
    if let Some(dirs) = &nccl {
        build.define("USE_C10D_NCCL", None).includes(dirs);
    }
    build.file("cpp/c10d.cpp").compile("dino_c10d");
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if nccl.is_some() {
        // ProcessGroupNCCL lives in libtorch_cuda and calls c10::cuda (device guards).
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
}

/// `_GLIBCXX_USE_CXX11_ABI` as libtorch was built: asked of the venv's torch when torch-sys
/// uses it (`LIBTORCH_USE_PYTORCH`, the same interpreter torch-sys runs), else
/// `LIBTORCH_CXX11_ABI` as torch-sys reads it (default 1).
fn cxx11_abi() -> String {
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        let python = if std::env::var_os("VIRTUAL_ENV").is_some() {
            "python"
        } else {
            "python3"
        };
        let out = std::process::Command::new(python)
            .args([
                "-c",
                "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))",
            ])
            .output()
            .unwrap_or_else(|e| panic!("running {python} to ask torch its C++ ABI: {e}"));
        let abi = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            abi == "0" || abi == "1",
            "{python} printed {abi:?} for torch._C._GLIBCXX_USE_CXX11_ABI: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return abi;
    }
    std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned())
}

/// The include directories for ProcessGroupNCCL, or None to build gloo only. It needs nccl.h
/// (the venv's `nvidia/nccl/include`) and complete CUDA headers: the `nvidia-cuda-runtime` wheel
/// alone lacks `crt/host_config.h` and CCCL's `nv/target`, which the `nvidia-cuda-crt` and
/// `nvidia-cuda-cccl` wheels add to the same `nvidia/cu13/include`; a toolkit can also be named
/// by `DINO_STREAM_CUDA_INCLUDE` or found at `$CUDA_HOME/include` or /usr/local/cuda/include.
/// `DINO_STREAM_NO_NCCL` builds gloo only.
fn nccl_includes(torch_root: &Path) -> Option<Vec<PathBuf>> {
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=DINO_STREAM_NO_NCCL");
    if std::env::var_os("DINO_STREAM_NO_NCCL").is_some() {
        return None;
    }
    let site = torch_root.parent()?;
    let mut dirs: Vec<PathBuf> = [
        std::env::var_os("DINO_STREAM_CUDA_INCLUDE").map(PathBuf::from),
        Some(site.join("nvidia/cu13/include")),
        std::env::var_os("CUDA_HOME").map(|h| PathBuf::from(h).join("include")),
        Some(PathBuf::from("/usr/local/cuda/include")),
    ]
    .into_iter()
    .flatten()
    .filter(|d| d.is_dir())
    .collect();
    let cccl: Vec<PathBuf> = dirs
        .iter()
        .map(|d| d.join("cccl"))
        .filter(|d| d.is_dir())
        .collect();
    dirs.extend(cccl);
    dirs.push(site.join("nvidia/nccl/include"));
    let has = |file: &str| dirs.iter().any(|d| d.join(file).exists());
    let complete = ["cuda_runtime.h", "crt/host_config.h", "nv/target", "nccl.h"];
    if let Some(missing) = complete.iter().find(|f| !has(f)) {
        println!(
            "cargo:warning=c10d without NCCL: no {missing} among {dirs:?} (CUDA training across \
             ranks needs it; `make venv` installs the nvidia-cuda-crt/-cccl header wheels)"
        );
        return None;
    }
    Some(dirs)
}

//! Links libtorch so that the binary runs with no environment set, and the system
//! libjpeg-turbo when there is one.
//!
//! torch-sys finds libtorch (from the project venv's PyPI torch when `LIBTORCH_USE_PYTORCH=1`)
//! and exports its library directory as `DEP_TCH_LIBTORCH_LIB`. We bake that directory into the
//! binary's rpath, and force-link `libtorch` with `--no-as-needed`: without it the linker drops
//! `libtorch.so` (no symbol is referenced directly), and with it `libtorch_cuda.so` is never
//! loaded, so CUDA would be invisible on a GPU machine. This mirrors tch's own examples.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    link_turbojpeg();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        return;
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

//! Links libtorch so that the binary runs with no environment set.
//!
//! torch-sys finds libtorch (from the project venv's PyPI torch when `LIBTORCH_USE_PYTORCH=1`)
//! and exports its library directory as `DEP_TCH_LIBTORCH_LIB`. We bake that directory into the
//! binary's rpath, and force-link `libtorch` with `--no-as-needed`: without it the linker drops
//! `libtorch.so` (no symbol is referenced directly), and with it `libtorch_cuda.so` is never
//! loaded, so CUDA would be invisible on a GPU machine. This mirrors tch's own examples.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
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

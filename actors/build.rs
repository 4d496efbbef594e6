// Embed an rpath to libtorch's folder in every binary and test of this
// package, so `ecomap` runs without `LD_LIBRARY_PATH`. torch-sys reports
// the folder it linked against (the wheel's `torch/lib` when built with
// `LIBTORCH_USE_PYTORCH=1`) as `DEP_TCH_LIBTORCH_LIB`.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}

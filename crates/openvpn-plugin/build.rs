//! Compiles the C half of the plug-in log callbacks (`src/log_shim.c`): plug-ins log through
//! a printf-style varargs function and a `va_list` one, which stable Rust can neither define
//! nor format, so `vsnprintf` does the formatting and hands the text to Rust.

fn main() {
    println!("cargo:rerun-if-changed=src/log_shim.c");
    cc::Build::new()
        .file("src/log_shim.c")
        .warnings(true)
        .compile("ovrs_plugin_log_shim");
}

//! `openvpn-plugin`: loads OpenVPN 2.6 plug-in modules (`plugin FILE [ARGS…]`) and calls
//! them, behind a safe API.
//!
//! It owns the C side of the plug-in interface: `dlopen`, the entry points
//! `openvpn_plugin_{open,func}_v{3,2,1}`, `close_v1`, the per-client constructor and
//! destructor, the argument structures of interface v3 (struct version 5, no TLS library
//! objects: `ssl_api` is none), the callbacks a module may use (logging into `tracing`,
//! memory wiping, base64), and the lists modules return (allocated by the module with
//! `malloc`, released here with `free`). What a call *means* (which environment, what to do
//! with a deferred answer, when to call) is the host's business: `openvpn-server` and
//! `openvpn-client`.
//!
//! ```text
//!  "plugin auth-pam.so login"        Plugin::load(path, args, env) ──▶ module's open_v3/v2/v1
//!                                         │  type mask, handle, top-level client context
//!  host event (auth, connect, up…) ─▶ Plugin::call(kind, args, env, client?) ──▶ func_v3/v2/v1
//!                                         ◀── CallOutcome { Success | Failure | Deferred,
//!                                                          returned [(name, value)] }
//!  drop(Plugin)                       ──▶ client destructor, close_v1, dlclose
//! ```
//!
//! A module named without a directory is looked for where OpenVPN's packages install them
//! ([`plugin_dirs`]). Modules exporting only the older v1/v2 entry points (Debian's
//! `openvpn-plugin-down-root.so` is one) are called through those, as OpenVPN does.
//!
//! # Unsafe code
//! After `openvpn-tun`, this is the second crate of the workspace with `unsafe`: calling
//! foreign functions found by name cannot be checked by the compiler. It is kept to
//! `plugin.rs` (loading, entry points, the call) and `callbacks.rs` (what modules call back,
//! freeing their lists); each block has a `// SAFETY:` comment saying why it holds. The two
//! log callbacks are printf-style (one variadic, one taking a `va_list`), which stable Rust
//! cannot implement, so a small C file (`src/log_shim.c`, built by `build.rs` with the `cc`
//! crate) formats the message and hands the text to Rust.
//!
//! A [`Plugin`] is `Send` but not `Sync`: calls take `&mut self`, so a module is never
//! entered by two threads at once, as under OpenVPN's single-threaded event loop.

mod abi;
mod callbacks;
mod kind;
mod plugin;

pub use kind::{PluginKind, TypeMask};
pub use plugin::{
    ApiVersion, CallOutcome, CallStatus, ClientContext, OVPN_VERSION, Plugin, PluginError,
    init_args, plugin_dirs, resolve_path,
};

//! The plug-in ABI as C sees it: the structures passed to and from a module, the exported
//! function types we look up, and the numbers that travel through them.
//!
//! Written from the published description of the interface (OpenVPN's plug-in header and
//! manual): field order and widths follow the C declarations on LP64 Linux, where a C `enum`
//! is an `int`.

use std::ffi::{c_char, c_int, c_uint, c_void};

/// Version of the v3 argument structures we fill in. Version 5 is the one whose callback
/// table has all five entries (two log functions, memory wiping, base64 both ways).
pub(crate) const STRUCT_VERSION: c_int = 5;

/// The interface version a module may ask for at most (`min_version_required`).
pub(crate) const INTERFACE_VERSION: c_int = 3;

/// A module's answer: the work was done and succeeded.
pub(crate) const FUNC_SUCCESS: c_int = 0;
/// A module's answer: the decision comes later (through a file named in the environment).
pub(crate) const FUNC_DEFERRED: c_int = 2;

/// `ssl_api`: we hand modules no TLS library objects (no certificate pointers).
pub(crate) const SSL_API_NONE: c_int = 0;

/// One entry of the list a module hands back; the module allocates the nodes and both
/// strings with `malloc`, and the host releases them with `free`.
#[repr(C)]
pub(crate) struct StringList {
    pub(crate) next: *mut StringList,
    pub(crate) name: *mut c_char,
    pub(crate) value: *mut c_char,
}

/// Log with a printf format and variadic arguments.
pub(crate) type LogFn = unsafe extern "C" fn(c_int, *const c_char, *const c_char, ...);
/// Log with a printf format and a `va_list` (passed as a pointer on the ABIs we build for).
pub(crate) type VlogFn = unsafe extern "C" fn(c_int, *const c_char, *const c_char, *mut c_void);
/// Overwrite memory with zeros in a way the optimiser keeps.
pub(crate) type MemzeroFn = unsafe extern "C" fn(*mut c_void, usize);
/// Base64-encode `size` bytes into a freshly `malloc`ed string; returns its length or -1.
pub(crate) type Base64EncodeFn =
    unsafe extern "C" fn(*const c_void, c_int, *mut *mut c_char) -> c_int;
/// Base64-decode a string into a buffer of `size` bytes; returns the byte count or -1.
pub(crate) type Base64DecodeFn = unsafe extern "C" fn(*const c_char, *mut c_void, c_int) -> c_int;

/// The services the host offers a v3 module (it may keep the pointer until it is closed).
#[repr(C)]
pub(crate) struct Callbacks {
    pub(crate) log: LogFn,
    pub(crate) vlog: VlogFn,
    pub(crate) secure_memzero: MemzeroFn,
    pub(crate) base64_encode: Base64EncodeFn,
    pub(crate) base64_decode: Base64DecodeFn,
}

/// What `open_v3` reads.
#[repr(C)]
pub(crate) struct OpenIn {
    /// Every call type the host can make.
    pub(crate) type_mask: c_int,
    /// NULL-terminated; `argv[0]` is the module's path.
    pub(crate) argv: *const *const c_char,
    /// NULL-terminated `name=value` strings.
    pub(crate) envp: *const *const c_char,
    pub(crate) callbacks: *mut Callbacks,
    pub(crate) ssl_api: c_int,
    pub(crate) ovpn_version: *const c_char,
    pub(crate) ovpn_version_major: c_uint,
    pub(crate) ovpn_version_minor: c_uint,
    pub(crate) ovpn_version_patch: *const c_char,
}

/// What `open_v3` writes back.
#[repr(C)]
pub(crate) struct OpenReturn {
    /// The call types the module wants.
    pub(crate) type_mask: c_int,
    /// The module's own state, passed back on every later call.
    pub(crate) handle: *mut c_void,
    pub(crate) return_list: *mut *mut StringList,
}

/// What `func_v3` reads.
#[repr(C)]
pub(crate) struct FuncIn {
    pub(crate) kind: c_int,
    pub(crate) argv: *const *const c_char,
    pub(crate) envp: *const *const c_char,
    pub(crate) handle: *mut c_void,
    pub(crate) per_client_context: *mut c_void,
    /// Certificate depth for TLS_VERIFY (we pass no certificate object).
    pub(crate) current_cert_depth: c_int,
    pub(crate) current_cert: *mut c_void,
}

/// What `func_v3` writes back.
#[repr(C)]
pub(crate) struct FuncReturn {
    pub(crate) return_list: *mut *mut StringList,
}

/// `openvpn_plugin_open_v3(version, in, out) -> status`.
pub(crate) type OpenV3 = unsafe extern "C" fn(c_int, *const OpenIn, *mut OpenReturn) -> c_int;
/// `openvpn_plugin_open_v2(&mask, argv, envp, &list) -> handle` (NULL: failed).
pub(crate) type OpenV2 = unsafe extern "C" fn(
    *mut c_uint,
    *const *const c_char,
    *const *const c_char,
    *mut *mut StringList,
) -> *mut c_void;
/// `openvpn_plugin_open_v1(&mask, argv, envp) -> handle` (NULL: failed).
pub(crate) type OpenV1 =
    unsafe extern "C" fn(*mut c_uint, *const *const c_char, *const *const c_char) -> *mut c_void;
/// `openvpn_plugin_func_v3(version, in, out) -> status`.
pub(crate) type FuncV3 = unsafe extern "C" fn(c_int, *const FuncIn, *mut FuncReturn) -> c_int;
/// `openvpn_plugin_func_v2(handle, type, argv, envp, client, &list) -> status`.
pub(crate) type FuncV2 = unsafe extern "C" fn(
    *mut c_void,
    c_int,
    *const *const c_char,
    *const *const c_char,
    *mut c_void,
    *mut *mut StringList,
) -> c_int;
/// `openvpn_plugin_func_v1(handle, type, argv, envp) -> status`.
pub(crate) type FuncV1 =
    unsafe extern "C" fn(*mut c_void, c_int, *const *const c_char, *const *const c_char) -> c_int;
/// `openvpn_plugin_close_v1(handle)`.
pub(crate) type CloseV1 = unsafe extern "C" fn(*mut c_void);
/// `openvpn_plugin_client_constructor_v1(handle) -> per-client state` (may be NULL).
pub(crate) type ClientConstructorV1 = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
/// `openvpn_plugin_client_destructor_v1(handle, per-client state)`.
pub(crate) type ClientDestructorV1 = unsafe extern "C" fn(*mut c_void, *mut c_void);
/// `openvpn_plugin_min_version_required_v1() -> interface version`.
pub(crate) type MinVersionV1 = unsafe extern "C" fn() -> c_int;

/// Exported symbol names, NUL-terminated for `dlsym`.
pub(crate) mod symbol {
    pub(crate) const OPEN_V3: &[u8] = b"openvpn_plugin_open_v3\0";
    pub(crate) const OPEN_V2: &[u8] = b"openvpn_plugin_open_v2\0";
    pub(crate) const OPEN_V1: &[u8] = b"openvpn_plugin_open_v1\0";
    pub(crate) const FUNC_V3: &[u8] = b"openvpn_plugin_func_v3\0";
    pub(crate) const FUNC_V2: &[u8] = b"openvpn_plugin_func_v2\0";
    pub(crate) const FUNC_V1: &[u8] = b"openvpn_plugin_func_v1\0";
    pub(crate) const CLOSE_V1: &[u8] = b"openvpn_plugin_close_v1\0";
    pub(crate) const CLIENT_CONSTRUCTOR_V1: &[u8] = b"openvpn_plugin_client_constructor_v1\0";
    pub(crate) const CLIENT_DESTRUCTOR_V1: &[u8] = b"openvpn_plugin_client_destructor_v1\0";
    pub(crate) const MIN_VERSION_V1: &[u8] = b"openvpn_plugin_min_version_required_v1\0";
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The LP64 layouts (8-byte pointers, 4-byte int and enum) the C side expects.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn layouts_match_lp64_c() {
        assert_eq!(size_of::<StringList>(), 24);
        assert_eq!(size_of::<Callbacks>(), 40);
        assert_eq!(offset_of!(OpenIn, argv), 8);
        assert_eq!(offset_of!(OpenIn, callbacks), 24);
        assert_eq!(offset_of!(OpenIn, ssl_api), 32);
        assert_eq!(offset_of!(OpenIn, ovpn_version), 40);
        assert_eq!(offset_of!(OpenIn, ovpn_version_major), 48);
        assert_eq!(offset_of!(OpenIn, ovpn_version_minor), 52);
        assert_eq!(offset_of!(OpenIn, ovpn_version_patch), 56);
        assert_eq!(size_of::<OpenIn>(), 64);
        assert_eq!(offset_of!(OpenReturn, handle), 8);
        assert_eq!(size_of::<OpenReturn>(), 24);
        assert_eq!(offset_of!(FuncIn, argv), 8);
        assert_eq!(offset_of!(FuncIn, per_client_context), 32);
        assert_eq!(offset_of!(FuncIn, current_cert_depth), 40);
        assert_eq!(offset_of!(FuncIn, current_cert), 48);
        assert_eq!(size_of::<FuncIn>(), 56);
    }
}

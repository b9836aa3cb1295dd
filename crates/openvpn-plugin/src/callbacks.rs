//! The services a v3 module may call back into: logging (formatted by `log_shim.c`, logged
//! here through `tracing`), memory wiping and base64.

use std::ffi::{CStr, c_char, c_int, c_void};

use base64::Engine as _;

use crate::abi::{Callbacks, StringList};

// The C half (src/log_shim.c): the variadic and va_list entry points a module calls.
unsafe extern "C" {
    fn ovrs_plugin_log_init();
    fn ovrs_plugin_log(flags: c_int, plugin: *const c_char, format: *const c_char, ...);
    fn ovrs_plugin_vlog(
        flags: c_int,
        plugin: *const c_char,
        format: *const c_char,
        args: *mut c_void,
    );
}

/// Log flag: an error.
const LOG_ERR: c_int = 1 << 0;
/// Log flag: a warning.
const LOG_WARN: c_int = 1 << 1;
/// Log flag: a note.
const LOG_NOTE: c_int = 1 << 2;
/// Log flag: add the description of `errno` to the message.
const LOG_ERRNO: c_int = 1 << 8;

/// The callback table for a module being opened. Also records this process as the one that
/// logs through Rust (see `log_shim.c`).
pub(crate) fn table() -> Box<Callbacks> {
    // SAFETY: ovrs_plugin_log_init only stores getpid() in a static of the C file; a module's
    // logging reads it. Callers reach here from Plugin::load before the module can log.
    unsafe { ovrs_plugin_log_init() };
    Box::new(Callbacks {
        log: ovrs_plugin_log,
        vlog: ovrs_plugin_vlog,
        secure_memzero,
        base64_encode,
        base64_decode,
    })
}

/// Where `log_shim.c` delivers a formatted message.
///
/// # Safety
/// `plugin` and `text` are NUL-terminated strings valid for the call (the C side checks
/// them for NULL and formats `text` into its own buffer).
#[unsafe(no_mangle)]
unsafe extern "C" fn ovrs_plugin_log_sink(
    flags: c_int,
    plugin: *const c_char,
    text: *const c_char,
    errnum: c_int,
) {
    if plugin.is_null() || text.is_null() {
        return;
    }
    // SAFETY: both are non-NULL, NUL-terminated and live for this call (see above).
    let (plugin, text) = unsafe { (CStr::from_ptr(plugin), CStr::from_ptr(text)) };
    let plugin = plugin.to_string_lossy();
    let mut text = text.to_string_lossy().into_owned();
    if flags & LOG_ERRNO != 0 {
        text.push_str(&format!(
            ": {} (errno={errnum})",
            std::io::Error::from_raw_os_error(errnum)
        ));
    }
    if flags & LOG_ERR != 0 {
        tracing::error!("{plugin}: {text}");
    } else if flags & LOG_WARN != 0 {
        tracing::warn!("{plugin}: {text}");
    } else if flags & LOG_NOTE != 0 {
        tracing::info!("{plugin}: {text}");
    } else {
        tracing::debug!("{plugin}: {text}");
    }
}

/// Zeros `len` bytes at `data` with volatile writes.
///
/// # Safety
/// `data` points to `len` writable bytes (or `len` is 0).
unsafe extern "C" fn secure_memzero(data: *mut c_void, len: usize) {
    if data.is_null() {
        return;
    }
    let p = data.cast::<u8>();
    for i in 0..len {
        // SAFETY: i < len, and the module passed `len` writable bytes at `data`.
        unsafe { std::ptr::write_volatile(p.add(i), 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Encodes `size` bytes at `data` as standard padded base64 into a NUL-terminated string
/// from `malloc` (the module frees it), stored at `*out`. Returns the string's length, or -1.
///
/// # Safety
/// `data` points to `size` readable bytes; `out` is writable.
unsafe extern "C" fn base64_encode(
    data: *const c_void,
    size: c_int,
    out: *mut *mut c_char,
) -> c_int {
    let Ok(n) = usize::try_from(size) else {
        return -1;
    };
    if out.is_null() || (data.is_null() && n > 0) {
        return -1;
    }
    let bytes = if n == 0 {
        &[][..]
    } else {
        // SAFETY: the module passed `size` readable bytes at `data` (checked non-NULL).
        unsafe { std::slice::from_raw_parts(data.cast::<u8>(), n) }
    };
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let Ok(len) = c_int::try_from(text.len()) else {
        return -1;
    };
    let Some(copy) = malloc_cstring(text.as_bytes()) else {
        return -1;
    };
    // SAFETY: `out` is non-NULL and writable (the module's own variable).
    unsafe { *out = copy };
    len
}

/// Decodes the base64 string `text` into `size` bytes at `data`. Returns the number of
/// bytes, or -1 if the text is not base64 or does not fit.
///
/// # Safety
/// `text` is NUL-terminated; `data` points to `size` writable bytes.
unsafe extern "C" fn base64_decode(text: *const c_char, data: *mut c_void, size: c_int) -> c_int {
    let Ok(room) = usize::try_from(size) else {
        return -1;
    };
    if text.is_null() || data.is_null() {
        return -1;
    }
    // SAFETY: non-NULL and NUL-terminated (the module's string).
    let text = unsafe { CStr::from_ptr(text) };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text.to_bytes()) else {
        return -1;
    };
    if bytes.len() > room {
        return -1;
    }
    // SAFETY: `data` has `size` >= bytes.len() writable bytes; the buffers are distinct.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.cast::<u8>(), bytes.len()) };
    c_int::try_from(bytes.len()).unwrap_or(-1)
}

/// A `malloc`ed NUL-terminated copy of `bytes` (NULL-free by construction of the callers).
fn malloc_cstring(bytes: &[u8]) -> Option<*mut c_char> {
    // SAFETY: malloc of a non-zero size; the result is checked for NULL below.
    let p = unsafe { libc::malloc(bytes.len() + 1) }.cast::<u8>();
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` has bytes.len() + 1 writable bytes, distinct from `bytes`.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        *p.add(bytes.len()) = 0;
    }
    Some(p.cast())
}

/// Copies out and frees a list a module returned: every node and both of its strings were
/// allocated by the module with `malloc`, so each goes back with `free`.
///
/// # Safety
/// `list` is NULL or the head of such a list, and nothing else refers to it any more.
pub(crate) unsafe fn take_string_list(mut list: *mut StringList) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while !list.is_null() {
        // SAFETY: `list` is a live node of the module's list (non-NULL, malloc'ed by it).
        let node = unsafe { &*list };
        let text = |p: *mut c_char| {
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: a non-NULL name or value is a NUL-terminated string of the module.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        out.push((text(node.name), text(node.value)));
        let next = node.next;
        // SAFETY: the module allocated the node and both strings with malloc and handed them
        // over; nothing reads them after this (free(NULL) is a no-op).
        unsafe {
            libc::free(node.name.cast());
            libc::free(node.value.cast());
            libc::free(list.cast());
        }
        list = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_through_the_c_interface() {
        let data = b"hello plug-in";
        let mut s: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid buffer and out pointer.
        let n = unsafe { base64_encode(data.as_ptr().cast(), data.len() as c_int, &mut s) };
        assert_eq!(n, 20);
        // SAFETY: base64_encode returned a malloc'ed NUL-terminated string.
        let text = unsafe { CStr::from_ptr(s) }
            .to_str()
            .unwrap_or("")
            .to_owned();
        assert_eq!(text, "aGVsbG8gcGx1Zy1pbg==");
        let mut buf = [0u8; 32];
        // SAFETY: `s` is NUL-terminated, `buf` has 32 bytes.
        let m = unsafe { base64_decode(s, buf.as_mut_ptr().cast(), 32) };
        assert_eq!(&buf[..m as usize], data);
        // SAFETY: too small a buffer: refused, nothing written past it.
        assert_eq!(unsafe { base64_decode(s, buf.as_mut_ptr().cast(), 4) }, -1);
        // SAFETY: `s` came from malloc.
        unsafe { libc::free(s.cast()) };
        let mut secret = [7u8; 8];
        // SAFETY: 8 writable bytes.
        unsafe { secure_memzero(secret.as_mut_ptr().cast(), 8) };
        assert_eq!(secret, [0; 8]);
    }
}

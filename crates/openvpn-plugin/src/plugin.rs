//! One loaded module: open, calls, per-client state, close.

use std::ffi::{CString, c_char, c_int, c_uint, c_void};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};

use crate::abi::{self, symbol};
use crate::callbacks;
use crate::kind::{PluginKind, TypeMask};

/// What may go wrong loading or calling a module. Each message names the module's path.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// `dlopen` refused the file.
    #[error("plugin {}: cannot load it: {reason}", path.display())]
    Load {
        /// The module.
        path: PathBuf,
        /// The dynamic loader's message.
        reason: String,
    },
    /// A required entry point is not exported.
    #[error(
        "plugin {}: it exports no {symbol}; is it an OpenVPN plug-in module?",
        path.display()
    )]
    MissingSymbol {
        /// The module.
        path: PathBuf,
        /// What we looked for.
        symbol: &'static str,
    },
    /// The module needs a newer plug-in interface than ours.
    #[error(
        "plugin {}: it needs plug-in interface version {wanted}; this host offers {offered}",
        path.display()
    )]
    TooNew {
        /// The module.
        path: PathBuf,
        /// The version the module asked for.
        wanted: i32,
        /// Ours.
        offered: i32,
    },
    /// The module's open function reported failure.
    #[error(
        "plugin {}: its initialisation failed (arguments {args:?}; its own log lines above say why)",
        path.display()
    )]
    OpenFailed {
        /// The module.
        path: PathBuf,
        /// The arguments it was given (after the path).
        args: Vec<String>,
    },
    /// An argument or environment string cannot be passed to C.
    #[error("plugin {}: {what:?} contains a NUL byte", path.display())]
    Nul {
        /// The module.
        path: PathBuf,
        /// The string.
        what: String,
    },
    /// The module did not ask for this kind of call when it was opened.
    #[error("plugin {}: it did not ask for {kind} calls", path.display())]
    NotRequested {
        /// The module.
        path: PathBuf,
        /// The call.
        kind: PluginKind,
    },
    /// A [`ClientContext`] made by another module was passed.
    #[error("plugin {}: the client context belongs to another module", path.display())]
    ForeignContext {
        /// The module.
        path: PathBuf,
    },
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallStatus {
    /// The module succeeded (for authentication kinds: accepted).
    Success,
    /// The module failed (for authentication kinds: rejected). Any code other than success
    /// and deferred counts as a failure.
    Failure,
    /// The decision comes later, through a file named in the environment (e.g.
    /// `auth_control_file`).
    Deferred,
}

/// The result of [`Plugin::call`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallOutcome {
    /// Success, failure or deferred.
    pub status: CallStatus,
    /// The `(name, value)` list the module returned (e.g. `("config", "push …")` for
    /// [`PluginKind::ClientConnectV2`]), already copied and released.
    pub returned: Vec<(String, String)>,
}

/// Which generation of the interface a module's entry points belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiVersion {
    /// `*_v1`: no returned list, no per-client state.
    V1,
    /// `*_v2`: returned list and per-client state as arguments.
    V2,
    /// `*_v3`: argument structures, callbacks (logging, base64).
    V3,
}

#[derive(Clone, Copy)]
enum Open {
    V3(abi::OpenV3),
    V2(abi::OpenV2),
    V1(abi::OpenV1),
}

/// The entry points a module exports (each `None` when it does not).
struct Found {
    open_v3: Option<abi::OpenV3>,
    open_v2: Option<abi::OpenV2>,
    open_v1: Option<abi::OpenV1>,
    func_v3: Option<abi::FuncV3>,
    func_v2: Option<abi::FuncV2>,
    func_v1: Option<abi::FuncV1>,
    close: Option<abi::CloseV1>,
    constructor: Option<abi::ClientConstructorV1>,
    destructor: Option<abi::ClientDestructorV1>,
    min_version: Option<abi::MinVersionV1>,
}

#[derive(Clone, Copy)]
enum Func {
    V3(abi::FuncV3),
    V2(abi::FuncV2),
    V1(abi::FuncV1),
}

/// The OpenVPN version we tell modules we are (we implement OpenVPN 2.6's interface).
pub const OVPN_VERSION: &str = "2.6.0";
const OVPN_VERSION_C: &[u8] = b"2.6.0\0";
const OVPN_VERSION_MAJOR: c_uint = 2;
const OVPN_VERSION_MINOR: c_uint = 6;
const OVPN_VERSION_PATCH_C: &[u8] = b"0\0";

/// Where a module named without a directory (or with one that does not start with `.` or
/// `/`) is looked for, as OpenVPN's `DEFAULT_DIR`: the Debian/Ubuntu multi-arch directory
/// first, then the usual others. The first one holding the file wins.
pub fn plugin_dirs() -> Vec<PathBuf> {
    let arch = std::env::consts::ARCH;
    vec![
        PathBuf::from(format!("/usr/lib/{arch}-linux-gnu/openvpn/plugins")),
        PathBuf::from("/usr/lib/openvpn/plugins"),
        PathBuf::from("/usr/lib64/openvpn/plugins"),
        PathBuf::from("/usr/local/lib/openvpn/plugins"),
    ]
}

/// The file `plugin NAME` loads: `NAME` itself when absolute or starting with `./` or
/// `../`, else `NAME` under the first of [`plugin_dirs`] that has it (the first directory
/// when none does, so the error names a plausible place).
pub fn resolve_path(name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() || name.starts_with("./") || name.starts_with("../") {
        return p.to_path_buf();
    }
    let dirs = plugin_dirs();
    dirs.iter()
        .map(|d| d.join(p))
        .find(|f| f.exists())
        .unwrap_or_else(|| dirs[0].join(p))
}

/// The arguments of `plugin MODULE ARGS…` as the module sees them (after `argv[0]`): a
/// single argument is an init string split into words (double or single quotes group,
/// backslash escapes the next character), several are taken as they are.
pub fn init_args(args: &[String]) -> Vec<String> {
    match args {
        [one] => split_words(one),
        _ => args.to_vec(),
    }
}

fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote = None;
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        match (ch, quote) {
            ('\\', q) if q != Some('\'') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (c, Some(q)) if c == q => quote = None,
            (c, Some(_)) => cur.push(c),
            ('"' | '\'', None) => {
                quote = Some(ch);
                in_word = true;
            }
            (c, None) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (c, None) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// NUL-terminated C strings plus the NULL-terminated pointer array over them (`argv`,
/// `envp`). The pointers stay valid while this value lives (moving it moves no string).
struct CArray {
    _strings: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl CArray {
    fn new(path: &Path, items: impl IntoIterator<Item = String>) -> Result<CArray, PluginError> {
        let strings = items
            .into_iter()
            .map(|s| {
                CString::new(s).map_err(|e| PluginError::Nul {
                    path: path.to_path_buf(),
                    what: String::from_utf8_lossy(&e.into_vec()).into_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Ok(CArray {
            _strings: strings,
            ptrs,
        })
    }

    fn env(path: &Path, env: &[(String, String)]) -> Result<CArray, PluginError> {
        CArray::new(path, env.iter().map(|(k, v)| format!("{k}={v}")))
    }

    fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}

/// A module's per-client state (from its `client_constructor`), passed with the calls about
/// that client. Give it back with [`Plugin::drop_client`]; dropped otherwise, the module's
/// memory for it leaks.
#[derive(Debug)]
pub struct ClientContext {
    ptr: *mut c_void,
    owner: u64,
}

// SAFETY: the pointer is only an opaque token for the module; it is dereferenced only by the
// module, inside calls made through `&mut Plugin`, never concurrently.
unsafe impl Send for ClientContext {}

/// A loaded, opened module. Calls take `&mut self`: a module is called by one thread at a
/// time, as in OpenVPN's single-threaded event loop (share it behind a `Mutex`).
///
/// Dropping it destroys the module's top-level client context, calls its `close` function,
/// and unloads the library.
pub struct Plugin {
    path: PathBuf,
    args: Vec<String>,
    id: u64,
    handle: *mut c_void,
    mask: TypeMask,
    open_version: ApiVersion,
    func: Func,
    close: abi::CloseV1,
    constructor: Option<abi::ClientConstructorV1>,
    destructor: Option<abi::ClientDestructorV1>,
    /// The top-level client context OpenVPN makes right after opening (used when a call is
    /// about no client in particular).
    generic: *mut c_void,
    // A v3 module may keep pointers into what it was opened with, so all of it lives as long
    // as the module.
    _open_argv: CArray,
    _open_envp: CArray,
    _callbacks: Box<abi::Callbacks>,
    /// Unloaded last (fields drop in order), after `Drop::drop` closed the module.
    _lib: Library,
}

// SAFETY: every use of the module's handle, entry points and contexts goes through `&mut
// self` (or `Drop`), so calls into the module never overlap, which is all OpenVPN's
// single-threaded host guarantees a module; no thread-local state of ours is involved.
unsafe impl Send for Plugin {}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("type_mask", &self.mask)
            .field("api", &(self.open_version, self.func_version()))
            .finish_non_exhaustive()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Plugin {
    /// Loads module `path` (see [`resolve_path`]), opens it with `args` (`argv[1..]`; the path
    /// is `argv[0]`) and environment `envp`, offering every kind we call ([`TypeMask::ALL`]).
    pub fn load(
        path: &str,
        args: &[String],
        envp: &[(String, String)],
    ) -> Result<Plugin, PluginError> {
        Plugin::load_offering(path, args, envp, TypeMask::ALL)
    }

    /// Like [`Plugin::load`], offering only the kinds in `offered` (the module's mask is cut
    /// down to them).
    pub fn load_offering(
        path: &str,
        args: &[String],
        envp: &[(String, String)],
        offered: TypeMask,
    ) -> Result<Plugin, PluginError> {
        let path = resolve_path(path);
        // SAFETY: loading a library runs its initialisers: that is what loading a module the
        // operator configured means; RTLD_NOW resolves every symbol now, so a broken module
        // fails here rather than in the middle of a call.
        let lib = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| {
            PluginError::Load {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?;
        let missing = |symbol| PluginError::MissingSymbol {
            path: path.clone(),
            symbol,
        };
        // SAFETY: each name is looked up with the function type the ABI gives it, and the
        // copied function pointers are used only while `lib` stays loaded (it is the last
        // field of Plugin, and nothing keeps them when loading fails).
        let found = unsafe {
            Found {
                open_v3: sym(&lib, symbol::OPEN_V3),
                open_v2: sym(&lib, symbol::OPEN_V2),
                open_v1: sym(&lib, symbol::OPEN_V1),
                func_v3: sym(&lib, symbol::FUNC_V3),
                func_v2: sym(&lib, symbol::FUNC_V2),
                func_v1: sym(&lib, symbol::FUNC_V1),
                close: sym(&lib, symbol::CLOSE_V1),
                constructor: sym(&lib, symbol::CLIENT_CONSTRUCTOR_V1),
                destructor: sym(&lib, symbol::CLIENT_DESTRUCTOR_V1),
                min_version: sym(&lib, symbol::MIN_VERSION_V1),
            }
        };
        let open = match (found.open_v3, found.open_v2, found.open_v1) {
            (Some(f), _, _) => Open::V3(f),
            (None, Some(f), _) => Open::V2(f),
            (None, None, Some(f)) => Open::V1(f),
            (None, None, None) => {
                return Err(missing(
                    "openvpn_plugin_open_v3 (nor openvpn_plugin_open_v2 / _v1)",
                ));
            }
        };
        let func = match (found.func_v3, found.func_v2, found.func_v1) {
            (Some(f), _, _) => Func::V3(f),
            (None, Some(f), _) => Func::V2(f),
            (None, None, Some(f)) => Func::V1(f),
            (None, None, None) => {
                return Err(missing(
                    "openvpn_plugin_func_v3 (nor openvpn_plugin_func_v2 / _v1)",
                ));
            }
        };
        let close = found
            .close
            .ok_or_else(|| missing("openvpn_plugin_close_v1"))?;
        let (constructor, destructor) = (found.constructor, found.destructor);
        if let Some(f) = found.min_version {
            // SAFETY: takes no arguments and returns an int, per the ABI.
            let wanted = unsafe { f() };
            if wanted > abi::INTERFACE_VERSION {
                return Err(PluginError::TooNew {
                    path,
                    wanted,
                    offered: abi::INTERFACE_VERSION,
                });
            }
        }

        let argv = CArray::new(
            &path,
            std::iter::once(path.to_string_lossy().into_owned()).chain(args.iter().cloned()),
        )?;
        let envp_c = CArray::env(&path, envp)?;
        let mut callbacks = callbacks::table();
        let mut list: *mut abi::StringList = std::ptr::null_mut();
        let offered_bits = offered.0 as c_int;
        let (handle, mask, open_version) = match open {
            Open::V3(f) => {
                let input = abi::OpenIn {
                    type_mask: offered_bits,
                    argv: argv.as_ptr(),
                    envp: envp_c.as_ptr(),
                    callbacks: &mut *callbacks,
                    ssl_api: abi::SSL_API_NONE,
                    ovpn_version: OVPN_VERSION_C.as_ptr().cast(),
                    ovpn_version_major: OVPN_VERSION_MAJOR,
                    ovpn_version_minor: OVPN_VERSION_MINOR,
                    ovpn_version_patch: OVPN_VERSION_PATCH_C.as_ptr().cast(),
                };
                let mut ret = abi::OpenReturn {
                    type_mask: 0,
                    handle: std::ptr::null_mut(),
                    return_list: &mut list,
                };
                // SAFETY: `input` and what it points to (argv, envp, callbacks, version
                // strings) outlive the module; `ret` and `list` are ours to be written.
                let status = unsafe { f(abi::STRUCT_VERSION, &input, &mut ret) };
                let ok = status == abi::FUNC_SUCCESS;
                (
                    ok.then_some(ret.handle),
                    ret.type_mask as u32,
                    ApiVersion::V3,
                )
            }
            Open::V2(f) => {
                let mut m = offered.0 as c_uint;
                // SAFETY: NULL-terminated argv/envp that outlive the module; `m` and `list`
                // are ours to be written.
                let h = unsafe { f(&mut m, argv.as_ptr(), envp_c.as_ptr(), &mut list) };
                ((!h.is_null()).then_some(h), m, ApiVersion::V2)
            }
            Open::V1(f) => {
                let mut m = offered.0 as c_uint;
                // SAFETY: as for v2, without the list.
                let h = unsafe { f(&mut m, argv.as_ptr(), envp_c.as_ptr()) };
                ((!h.is_null()).then_some(h), m, ApiVersion::V1)
            }
        };
        // SAFETY: `list` is NULL or a list the module malloc'ed and handed to us.
        let opened_list = unsafe { callbacks::take_string_list(list) };
        if !opened_list.is_empty() {
            tracing::debug!("plugin {}: open returned {opened_list:?}", path.display());
        }
        let Some(handle) = handle else {
            return Err(PluginError::OpenFailed {
                path,
                args: args.to_vec(),
            });
        };
        let mut plugin = Plugin {
            path,
            args: args.to_vec(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            handle,
            mask: TypeMask(mask & offered.0),
            open_version,
            func,
            close,
            constructor,
            destructor,
            generic: std::ptr::null_mut(),
            _open_argv: argv,
            _open_envp: envp_c,
            _callbacks: callbacks,
            _lib: lib,
        };
        plugin.generic = plugin.construct();
        Ok(plugin)
    }

    /// The module's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The arguments it was opened with (after the path).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The kinds the module asked for (within what was offered).
    pub fn type_mask(&self) -> TypeMask {
        self.mask
    }

    /// Whether the module asked for `kind` calls.
    pub fn handles(&self, kind: PluginKind) -> bool {
        self.mask.contains(kind)
    }

    /// The interface generation of the open and call entry points used.
    pub fn api(&self) -> (ApiVersion, ApiVersion) {
        (self.open_version, self.func_version())
    }

    /// Whether the module keeps per-client state (exports a client constructor).
    pub fn has_client_contexts(&self) -> bool {
        self.constructor.is_some()
    }

    fn func_version(&self) -> ApiVersion {
        match self.func {
            Func::V3(_) => ApiVersion::V3,
            Func::V2(_) => ApiVersion::V2,
            Func::V1(_) => ApiVersion::V1,
        }
    }

    fn construct(&mut self) -> *mut c_void {
        match self.constructor {
            // SAFETY: the module's constructor with its own open handle.
            Some(f) => unsafe { f(self.handle) },
            None => std::ptr::null_mut(),
        }
    }

    fn destruct(&mut self, ptr: *mut c_void) {
        if let Some(f) = self.destructor {
            // SAFETY: `ptr` came from this module's constructor and is given back once.
            unsafe { f(self.handle, ptr) };
        }
    }

    /// Per-client state for a new client (a NULL context when the module keeps none).
    pub fn new_client(&mut self) -> ClientContext {
        ClientContext {
            ptr: self.construct(),
            owner: self.id,
        }
    }

    /// Gives a client's state back to the module (its client destructor).
    pub fn drop_client(&mut self, ctx: ClientContext) -> Result<(), PluginError> {
        if ctx.owner != self.id {
            return Err(PluginError::ForeignContext {
                path: self.path.clone(),
            });
        }
        if !ctx.ptr.is_null() {
            self.destruct(ctx.ptr);
        }
        Ok(())
    }

    /// Calls the module for `kind` with `args` (`argv[1..]`, as the matching script would
    /// get them; `argv[0]` is the module's path) and environment `envp`, about client
    /// `client` (else the top-level context). Blocking: the module runs on this thread.
    pub fn call(
        &mut self,
        kind: PluginKind,
        args: &[String],
        envp: &[(String, String)],
        client: Option<&ClientContext>,
    ) -> Result<CallOutcome, PluginError> {
        if !self.mask.contains(kind) {
            return Err(PluginError::NotRequested {
                path: self.path.clone(),
                kind,
            });
        }
        let ctx = match client {
            Some(c) if c.owner != self.id => {
                return Err(PluginError::ForeignContext {
                    path: self.path.clone(),
                });
            }
            Some(c) => c.ptr,
            None => self.generic,
        };
        let argv = CArray::new(
            &self.path,
            std::iter::once(self.path.to_string_lossy().into_owned()).chain(args.iter().cloned()),
        )?;
        let envp = CArray::env(&self.path, envp)?;
        let mut list: *mut abi::StringList = std::ptr::null_mut();
        let status = match self.func {
            Func::V3(f) => {
                let input = abi::FuncIn {
                    kind: kind.code(),
                    argv: argv.as_ptr(),
                    envp: envp.as_ptr(),
                    handle: self.handle,
                    per_client_context: ctx,
                    current_cert_depth: -1,
                    current_cert: std::ptr::null_mut(),
                };
                let mut ret = abi::FuncReturn {
                    return_list: &mut list,
                };
                // SAFETY: argv/envp are NULL-terminated and live across the call; the handle
                // and context are this module's; `ret`/`list` are ours to be written.
                unsafe { f(abi::STRUCT_VERSION, &input, &mut ret) }
            }
            // SAFETY: as for v3, with the same values passed as separate arguments.
            Func::V2(f) => unsafe {
                f(
                    self.handle,
                    kind.code(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                    ctx,
                    &mut list,
                )
            },
            // SAFETY: as for v3, without context and list.
            Func::V1(f) => unsafe { f(self.handle, kind.code(), argv.as_ptr(), envp.as_ptr()) },
        };
        // SAFETY: `list` is NULL or a list the module malloc'ed and handed over.
        let returned = unsafe { callbacks::take_string_list(list) };
        let status = match status {
            abi::FUNC_SUCCESS => CallStatus::Success,
            abi::FUNC_DEFERRED => CallStatus::Deferred,
            _ => CallStatus::Failure,
        };
        Ok(CallOutcome { status, returned })
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let generic = std::mem::replace(&mut self.generic, std::ptr::null_mut());
        if !generic.is_null() {
            self.destruct(generic);
        }
        // SAFETY: the module's close with its own handle, once; no call follows.
        unsafe { (self.close)(self.handle) };
    }
}

/// Looks up `name` as a `T`; `None` when the module does not export it.
///
/// # Safety
/// `T` must be the function pointer type the ABI gives that symbol, and the value must not
/// be used after `lib` is unloaded.
unsafe fn sym<T: Copy>(lib: &Library, name: &[u8]) -> Option<T> {
    // SAFETY: forwarded to the caller (type and lifetime of the symbol).
    unsafe { lib.get::<T>(name) }.ok().map(|s| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_string_is_split_like_openvpn_does() {
        let one = |s: &str| init_args(&[s.to_owned()]);
        assert_eq!(one("/bin/touch /tmp/x"), ["/bin/touch", "/tmp/x"]);
        assert_eq!(
            one("login 'a b' \"c d\" e\\ f"),
            ["login", "a b", "c d", "e f"]
        );
        assert_eq!(one("  "), Vec::<String>::new());
        assert_eq!(one("''"), [""]);
        let many = ["a b".to_owned(), "c".to_owned()];
        assert_eq!(init_args(&many), many);
    }

    #[test]
    fn paths_resolve_like_openvpn_does() {
        assert_eq!(resolve_path("/x/y.so"), PathBuf::from("/x/y.so"));
        assert_eq!(resolve_path("./y.so"), PathBuf::from("./y.so"));
        assert!(resolve_path("sub/y.so").ends_with("openvpn/plugins/sub/y.so"));
    }

    #[test]
    fn a_file_that_is_no_library_is_a_load_error() {
        let e = Plugin::load("/dev/null", &[], &[]).err();
        assert!(matches!(e, Some(PluginError::Load { .. })), "{e:?}");
        let e = Plugin::load("/nonexistent/x.so", &[], &[]).err();
        assert!(e.is_some_and(|e| e.to_string().contains("/nonexistent/x.so")));
    }
}

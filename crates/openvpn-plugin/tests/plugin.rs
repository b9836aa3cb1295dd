//! The loader against our own C test module (tests/test_plugin.c, built with gcc): open with
//! arguments and environment, calls with argv/envp, returned lists, deferred authentication,
//! per-client contexts, close.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use openvpn_plugin::{ApiVersion, CallStatus, Plugin, PluginError, PluginKind, TypeMask};

fn s(v: &str) -> String {
    v.to_owned()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (s(k), s(v))).collect()
}

fn value<'a>(list: &'a [(String, String)], name: &str) -> Option<&'a str> {
    list.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn open_call_and_close() {
    let dir = common::scratch("basic");
    let Some(so) = common::test_module(&dir) else {
        return;
    };
    let journal = dir.join("journal");
    let j = journal.to_string_lossy().into_owned();
    let mut p = Plugin::load(
        so.to_str().unwrap(),
        std::slice::from_ref(&j),
        &env(&[("open_env", "from-open")]),
    )
    .unwrap();
    assert_eq!(p.api(), (ApiVersion::V3, ApiVersion::V3));
    assert!(p.has_client_contexts());
    assert!(p.handles(PluginKind::Up) && p.handles(PluginKind::ClientConnectV2));
    assert!(!p.handles(PluginKind::RouteUp));

    let up = p
        .call(
            PluginKind::Up,
            &[s("tun7"), s("1500")],
            &env(&[("foo", "bar baz"), ("dev", "tun7")]),
            None,
        )
        .unwrap();
    assert_eq!(up.status, CallStatus::Success);
    assert_eq!(value(&up.returned, "argv1"), Some("tun7"));
    assert_eq!(value(&up.returned, "env_foo"), Some("bar baz"));
    assert_eq!(value(&up.returned, "version"), Some("2.6.0 2.6.0"));
    assert_eq!(value(&up.returned, "b64"), Some("aGk="), "base64 callback");

    let e = p.call(PluginKind::RouteUp, &[], &[], None).unwrap_err();
    assert!(matches!(e, PluginError::NotRequested { .. }), "{e}");
    let e = p.call(PluginKind::Up, &[s("a\0b")], &[], None).unwrap_err();
    assert!(matches!(e, PluginError::Nul { .. }), "{e}");

    // Per-client state: the module counts the calls it sees for each context.
    let c = p.new_client();
    for n in 1..=2 {
        let r = p
            .call(
                PluginKind::ClientConnectV2,
                &[],
                &env(&[("common_name", "client1")]),
                Some(&c),
            )
            .unwrap();
        assert_eq!(r.status, CallStatus::Success);
        assert_eq!(
            r.returned,
            [(
                s("config"),
                format!("push \"route 10.99.{n}.0 255.255.255.0\"")
            )]
        );
    }
    p.drop_client(c).unwrap();
    // Without one, the top-level context made at open is used (its second call, after UP).
    let r = p.call(PluginKind::ClientConnectV2, &[], &[], None).unwrap();
    assert_eq!(
        value(&r.returned, "config"),
        Some("push \"route 10.99.2.0 255.255.255.0\"")
    );

    // CLIENT_CONNECT (v1): the module writes directives into the file named by argv[1].
    let ccfile = dir.join("cc");
    let r = p
        .call(
            PluginKind::ClientConnect,
            &[ccfile.to_string_lossy().into_owned()],
            &[],
            None,
        )
        .unwrap();
    assert_eq!(r.status, CallStatus::Success);
    assert!(
        std::fs::read_to_string(&ccfile)
            .unwrap()
            .contains("route 10.98.0.0")
    );

    drop(p);
    let lines: Vec<String> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        [
            "open from-open",
            "constructor",
            "up tun7",
            "constructor",
            "connect-v2 client1 calls=1",
            "connect-v2 client1 calls=2",
            "destructor 2",
            "connect-v2 - calls=2",
            "connect -",
            "destructor 3",
            "close"
        ]
    );
}

#[test]
fn authentication_immediate_and_deferred() {
    let dir = common::scratch("auth");
    let Some(so) = common::test_module(&dir) else {
        return;
    };
    let j = dir.join("journal").to_string_lossy().into_owned();
    let mut p = Plugin::load(so.to_str().unwrap(), &[j], &[]).unwrap();
    let auth = |p: &mut Plugin, user: &str, pass: &str, acf: &std::path::Path| {
        p.call(
            PluginKind::AuthUserPassVerify,
            &[],
            &env(&[
                ("username", user),
                ("password", pass),
                ("common_name", "client1"),
                ("auth_control_file", acf.to_str().unwrap()),
            ]),
            None,
        )
        .unwrap()
        .status
    };
    let acf = dir.join("acf");
    assert_eq!(auth(&mut p, "alice", "right", &acf), CallStatus::Success);
    assert_eq!(auth(&mut p, "alice", "wrong", &acf), CallStatus::Failure);
    assert_eq!(auth(&mut p, "later-yes", "", &acf), CallStatus::Deferred);
    assert_eq!(common::wait_for_text(&acf, 5).as_deref(), Some("1"));
    let acf2 = dir.join("acf2");
    assert_eq!(auth(&mut p, "later-no", "", &acf2), CallStatus::Deferred);
    assert_eq!(common::wait_for_text(&acf2, 5).as_deref(), Some("0"));
}

#[test]
fn failed_open_offered_mask_and_foreign_contexts() {
    let dir = common::scratch("open");
    let Some(so) = common::test_module(&dir) else {
        return;
    };
    let so = so.to_str().unwrap();
    let j = dir.join("journal").to_string_lossy().into_owned();
    let e = Plugin::load(so, &[j.clone(), s("fail")], &[]).unwrap_err();
    assert!(matches!(e, PluginError::OpenFailed { .. }), "{e}");
    assert!(e.to_string().contains("ovrs-test-plugin.so"), "{e}");

    // Offered only UP: the module's wider request is cut down to it.
    let mut a = Plugin::load_offering(
        so,
        std::slice::from_ref(&j),
        &[],
        TypeMask::of(&[PluginKind::Up]),
    )
    .unwrap();
    assert_eq!(a.type_mask(), TypeMask::of(&[PluginKind::Up]));
    let mut b = Plugin::load(so, &[j], &[]).unwrap();
    let c = b.new_client();
    let e = a.call(PluginKind::Up, &[], &[], Some(&c)).unwrap_err();
    assert!(matches!(e, PluginError::ForeignContext { .. }), "{e}");
    assert!(a.drop_client(c).is_err());
}

#[test]
fn a_library_without_the_entry_points_names_the_missing_symbol() {
    let dir = common::scratch("nosym");
    let src = dir.join("empty.c");
    std::fs::write(&src, "int ovrs_nothing_here(void) { return 0; }\n").unwrap();
    let Some(so) = common::build_so(&src, &dir, "empty.so") else {
        return;
    };
    let e = Plugin::load(so.to_str().unwrap(), &[], &[]).unwrap_err();
    assert!(matches!(e, PluginError::MissingSymbol { .. }), "{e}");
    assert!(e.to_string().contains("openvpn_plugin_open_v3"), "{e}");
}

/// Collects what is logged through `tracing` on this thread.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn module_logging_reaches_tracing_through_both_callbacks() {
    let dir = common::scratch("log");
    let Some(so) = common::test_module(&dir) else {
        return;
    };
    let j = dir.join("journal").to_string_lossy().into_owned();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let p = Plugin::load(
            so.to_str().unwrap(),
            std::slice::from_ref(&j),
            &env(&[("open_env", "e1")]),
        );
        drop(p.unwrap());
        let e = Plugin::load(so.to_str().unwrap(), &[j, s("fail")], &[]).unwrap_err();
        assert!(matches!(e, PluginError::OpenFailed { .. }));
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // plugin_log (variadic) and plugin_vlog (va_list), formatted by the C shim.
    assert!(text.contains("INFO"), "{text}");
    assert!(
        text.contains("test-plugin: opened, 30719 offered, open_env=e1"),
        "{text}"
    );
    assert!(text.contains("test-plugin: vlog works: 42"), "{text}");
    assert!(
        text.contains("ERROR") && text.contains("test-plugin: asked to fail (fail)"),
        "{text}"
    );
}

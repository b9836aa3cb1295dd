//! The loader against the real modules of Debian's `openvpn` package: auth-pam (v3 open, v1
//! calls, deferred answers through `auth_control_file`) and down-root (v1 only; runs its
//! command as root on DOWN). Each test skips, saying why, when the module is not installed
//! or (auth-pam, which writes a PAM service file) when not root.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};

use openvpn_plugin::{ApiVersion, CallStatus, Plugin, PluginKind};

const DIR: &str = "/usr/lib/x86_64-linux-gnu/openvpn/plugins";

fn module(name: &str) -> Option<PathBuf> {
    let p = Path::new(DIR).join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} is not installed (apt-get install openvpn)",
            p.display()
        );
        None
    }
}

fn s(v: &str) -> String {
    v.to_owned()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A PAM service file in /etc/pam.d, removed when dropped.
struct PamService(PathBuf);

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn auth_pam_accepts_alice_and_denies_others() {
    let Some(so) = module("openvpn-plugin-auth-pam.so") else {
        return;
    };
    if !is_root() {
        eprintln!("SKIP: auth-pam test writes /etc/pam.d/ovrs-test-<pid>: needs root");
        return;
    }
    let service = format!("ovrs-test-{}", std::process::id());
    let pam = PamService(Path::new("/etc/pam.d").join(&service));
    std::fs::write(
        &pam.0,
        "auth required pam_succeed_if.so user = alice quiet\n\
         auth required pam_permit.so\n\
         account required pam_permit.so\n",
    )
    .unwrap();
    let dir = common::scratch("auth-pam");
    let mut p = Plugin::load(so.to_str().unwrap(), &[service], &[(s("verb"), s("3"))]).unwrap();
    assert_eq!(p.api(), (ApiVersion::V3, ApiVersion::V1));
    assert!(p.handles(PluginKind::AuthUserPassVerify));
    // Without `deferred_auth_pam` in the environment auth-pam answers at once; with it (and
    // an auth_control_file) its background process writes 1 or 0 into the file later.
    let cases = [
        ("alice", false, CallStatus::Success, "1"),
        ("bob", false, CallStatus::Failure, "0"),
        ("alice", true, CallStatus::Deferred, "1"),
        ("bob", true, CallStatus::Deferred, "0"),
    ];
    for (n, (user, deferred, status, verdict)) in cases.into_iter().enumerate() {
        // The host creates the (empty) control file; auth-pam only opens it for writing.
        let acf = dir.join(format!("acf{n}"));
        std::fs::write(&acf, "").unwrap();
        let mut env = vec![
            (s("username"), s(user)),
            (s("password"), s("secret")),
            (s("common_name"), s("client1")),
            (s("untrusted_ip"), s("192.0.2.1")),
            (s("auth_control_file"), acf.to_string_lossy().into_owned()),
        ];
        if deferred {
            env.push((s("deferred_auth_pam"), s("1")));
        }
        let r = p
            .call(PluginKind::AuthUserPassVerify, &[], &env, None)
            .unwrap();
        assert_eq!(r.status, status, "{user} deferred={deferred}");
        if deferred {
            let got = common::wait_for_text(&acf, 10);
            assert_eq!(got.as_deref().map(str::trim), Some(verdict), "{user}");
        }
    }
    drop(p);
}

#[test]
fn down_root_runs_its_command_on_down() {
    let Some(so) = module("openvpn-plugin-down-root.so") else {
        return;
    };
    let dir = common::scratch("down-root");
    let out = dir.join("down-ran");
    // One init string, split into argv as OpenVPN does: the command and its arguments.
    let init = format!(
        "/bin/sh -c 'printf %s-%s \"$dev\" \"$script_type\" > {}'",
        out.display()
    );
    let args = openvpn_plugin::init_args(&[init]);
    let mut p = Plugin::load(so.to_str().unwrap(), &args, &[(s("verb"), s("3"))]).unwrap();
    assert_eq!(p.api(), (ApiVersion::V1, ApiVersion::V1));
    assert!(p.handles(PluginKind::Up) && p.handles(PluginKind::Down));
    let env = [(s("dev"), s("tun-test")), (s("script_type"), s("down"))];
    // UP starts its root helper process; DOWN has it run the command with DOWN's environment.
    let up = p
        .call(PluginKind::Up, &[s("tun-test")], &env, None)
        .unwrap();
    assert_eq!(up.status, CallStatus::Success);
    assert!(!out.exists(), "the command runs on DOWN, not UP");
    let down = p
        .call(PluginKind::Down, &[s("tun-test")], &env, None)
        .unwrap();
    assert_eq!(down.status, CallStatus::Success);
    assert_eq!(
        common::wait_for_text(&out, 5).as_deref(),
        Some("tun-test-down")
    );
    drop(p);
}

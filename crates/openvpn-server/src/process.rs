//! Process set-up after the tun device and sockets exist: pid file and dropping privileges.

use anyhow::Context;

use crate::config::ServerConfig;

/// Writes the pid file and drops to `user`/`group` (OpenVPN order: after the device is up).
pub fn after_setup(cfg: &ServerConfig) -> anyhow::Result<()> {
    if let Some(p) = &cfg.writepid {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("writepid {}", p.display()))?;
    }
    if let Some(dir) = &cfg.chroot {
        tracing::info!("chroot to '{}'", dir.display());
    }
    if cfg.user.is_some() || cfg.group.is_some() || cfg.chroot.is_some() {
        openvpn_tun::process::drop_privileges_in(
            cfg.user.as_deref(),
            cfg.group.as_deref(),
            cfg.chroot.as_deref(),
        )
        .context("cannot drop privileges (chroot/user/group)")?;
        tracing::info!(
            "dropped privileges to user {} group {}",
            cfg.user.as_deref().unwrap_or("-"),
            cfg.group.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

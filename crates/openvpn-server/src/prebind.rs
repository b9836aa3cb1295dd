//! What the server opens as root before `user`/`group` drop privileges, in OpenVPN's order:
//! the management listener (a unix socket in a root-owned directory, or a port below 1024),
//! the status file and the `ifconfig-pool-persist` file. The files stay open and are
//! rewritten in place, so an unprivileged server still updates them.
//!
//! ```text
//!  run_with: tun, sockets ─▶ Prebound::open (as root) ─▶ drop privileges ─▶ serve(prebound)
//! ```

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use tokio::net::TcpListener;
use tracing::info;

use crate::config::{ManagementListen, ServerConfig};
use crate::management;

/// A file opened once and rewritten in place (truncated, then written from the start).
#[derive(Debug)]
pub struct KeptFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl KeptFile {
    /// Opens (creating) `path` for writing without truncating it.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        Ok(KeptFile {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file's contents with `text`.
    pub fn rewrite(&self, text: &str) -> std::io::Result<()> {
        let f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.set_len(0)?;
        f.write_all_at(text.as_bytes(), 0)?;
        (&*f).flush()
    }
}

/// Writes `text` to `kept` if the file was opened before the privilege drop, else to
/// `path` atomically (through a temporary file).
pub fn write(kept: Option<&KeptFile>, path: &Path, text: &str) -> std::io::Result<()> {
    match kept {
        Some(k) => k.rewrite(text),
        None => crate::status::write_text(path, text),
    }
}

/// The listener and files opened before the privilege drop.
#[derive(Default)]
pub struct Prebound {
    /// The management listener.
    pub management: Option<management::Listener>,
    /// The status file.
    pub status: Option<Arc<KeptFile>>,
    /// The `ifconfig-pool-persist` file.
    pub pool_persist: Option<Arc<KeptFile>>,
}

impl Prebound {
    /// Opens what `cfg` names (call as root, before [`crate::process::after_setup`]).
    pub async fn open(cfg: &ServerConfig) -> anyhow::Result<Self> {
        let management = match &cfg.management {
            Some(m) => Some(bind_management(&m.listen).await?),
            None => None,
        };
        let keep = |p: &Path, what: &str| -> anyhow::Result<Arc<KeptFile>> {
            Ok(Arc::new(
                KeptFile::open(p).with_context(|| format!("{what} {}", p.display()))?,
            ))
        };
        Ok(Prebound {
            management,
            status: cfg
                .status
                .as_ref()
                .map(|(p, _)| keep(p, "status"))
                .transpose()?,
            pool_persist: cfg
                .ifconfig_pool_persist
                .as_ref()
                .map(|(p, _)| keep(p, "ifconfig-pool-persist"))
                .transpose()?,
        })
    }
}

/// Binds the management listener (a stale unix socket file is replaced).
pub(crate) async fn bind_management(
    listen: &ManagementListen,
) -> anyhow::Result<management::Listener> {
    Ok(match listen {
        ManagementListen::Tcp(host, port) => {
            let l = TcpListener::bind((host.as_str(), *port))
                .await
                .with_context(|| format!("management {host} {port}"))?;
            info!("MANAGEMENT: TCP Socket listening on [AF_INET]{host}:{port}");
            management::Listener::Tcp(l)
        }
        ManagementListen::Unix(path) => {
            if std::fs::symlink_metadata(path)
                .map(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                })
                .unwrap_or(false)
            {
                let _ = std::fs::remove_file(path);
            }
            let l = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("management {} unix", path.display()))?;
            info!(
                "MANAGEMENT: unix domain socket listening on {}",
                path.display()
            );
            management::Listener::Unix(l)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_files_are_rewritten_in_place() {
        let dir = std::env::temp_dir().join(format!("ovrs-kept-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("status.log");
        std::fs::write(&p, "old content that is longer\n").unwrap();
        let k = KeptFile::open(&p).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "old content that is longer\n",
            "opening does not truncate"
        );
        k.rewrite("new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        // The handle keeps working after the file's directory becomes unwritable.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).unwrap();
        k.rewrite("still\n").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "still\n");
        std::fs::remove_dir_all(&dir).ok();
    }
}

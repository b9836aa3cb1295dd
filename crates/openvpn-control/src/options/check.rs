//! `--check-config` (openvpn-rs's own option, both binaries): what each option line does, then
//! whether the role's loader accepts the whole config; nothing is opened on the network.

use std::path::Path;

use crate::options::OptionLine;
use crate::options::catalog::{Role, report};

/// `--check-config` for either binary: prints what each option line of `file` and `cli` does
/// in `role` ([`report`]), then whether `load` (the role's full
/// loader: every referenced file is read, nothing is opened on the network) accepts them.
/// The exit status: 0 when it does.
pub fn check_config<T>(
    file: Option<&Path>,
    cli: Vec<OptionLine>,
    role: Role,
    load: impl FnOnce(Option<&Path>, Vec<OptionLine>) -> Result<T, crate::loading::LoadError>,
) -> i32 {
    let binary = match role {
        Role::Client => "openvpn-client",
        Role::Server => "openvpn-server",
    };
    let mut lines = match file.map(crate::loading::read_config_file) {
        Some(Ok(l)) => l,
        Some(Err(e)) => {
            eprintln!("{binary}: {e}");
            return 1;
        }
        None => Vec::new(),
    };
    lines.extend(cli.iter().filter(|l| l.name != "config").cloned());
    print!("{}", report(&lines, role));
    match load(file, cli) {
        Ok(_) => {
            println!("config OK: {binary} would start with it");
            0
        }
        Err(e) => {
            println!("config refused: {e}");
            1
        }
    }
}

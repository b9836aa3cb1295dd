//! The external commands the tests run, from `scripts/test-deps.txt` (the one list that
//! `.ci/run` installs and the README names): checked before `cargo xtask ci` starts, so a
//! missing tool is reported at once with its package instead of failing one case an hour in.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::netpair::which;

/// One line of the list: a command and the Debian package that provides it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Dep {
    /// The command looked up on PATH.
    pub(crate) command: String,
    /// The package to install when it is missing.
    pub(crate) package: String,
}

/// Parses `COMMAND PACKAGE` lines (`#` comments and blank lines skipped).
pub(crate) fn parse(text: &str) -> Result<Vec<Dep>> {
    let mut deps = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let [command, package] = words[..] else {
            bail!(
                "scripts/test-deps.txt line {}: expected 'COMMAND PACKAGE', got '{line}'",
                i + 1
            );
        };
        deps.push(Dep {
            command: command.to_owned(),
            package: package.to_owned(),
        });
    }
    Ok(deps)
}

/// The packages of the commands not found on PATH (each package once, in list order).
pub(crate) fn missing(deps: &[Dep]) -> Vec<String> {
    let mut packages: Vec<String> = Vec::new();
    for d in deps {
        if which(&d.command).is_err() && !packages.contains(&d.package) {
            packages.push(d.package.clone());
        }
    }
    packages
}

/// Checks every command of the list; as root, installs the missing packages with apt-get,
/// otherwise fails naming them.
pub(crate) fn ensure(root: &Path, as_root: bool) -> Result<()> {
    let list = root.join("scripts/test-deps.txt");
    let text = std::fs::read_to_string(&list)
        .with_context(|| format!("cannot read {}", list.display()))?;
    let deps = parse(&text)?;
    let packages = missing(&deps);
    if packages.is_empty() {
        println!("ci: all {} test commands found", deps.len());
        return Ok(());
    }
    if !as_root {
        bail!(
            "the tests need these packages: apt-get install -y {}",
            packages.join(" ")
        );
    }
    println!("ci: installing {}", packages.join(" "));
    for args in [
        vec!["update".to_owned()],
        ["install", "-y", "--no-install-recommends"]
            .into_iter()
            .map(str::to_owned)
            .chain(packages.iter().cloned())
            .collect(),
    ] {
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot run apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
    }
    let still = missing(&deps);
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_list_and_names_bad_lines() {
        let deps = parse("# c\n\nnft nftables\nip   iproute2\n").unwrap();
        assert_eq!(deps.len(), 2);
        assert_eq!(deps[0].command, "nft");
        assert_eq!(deps[1].package, "iproute2");
        let e = parse("nft\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn ci_run_installs_every_package_of_the_list() {
        let deps = parse(include_str!("../../scripts/test-deps.txt")).unwrap();
        let mut want: Vec<&str> = deps.iter().map(|d| d.package.as_str()).collect();
        want.sort_unstable();
        want.dedup();
        let run = include_str!("../../.ci/run");
        let line = run
            .lines()
            .find_map(|l| l.strip_prefix("packages=("))
            .and_then(|l| l.strip_suffix(')'))
            .expect(".ci/run has a packages=(...) line");
        let mut have: Vec<&str> = line.split_whitespace().collect();
        have.sort_unstable();
        assert_eq!(have, want, ".ci/run and scripts/test-deps.txt disagree");
    }

    #[test]
    fn the_committed_list_names_every_tool_the_cases_check() {
        let text = include_str!("../../scripts/test-deps.txt");
        let deps = parse(text).unwrap();
        for tool in [
            "nft", "tcpdump", "openvpn", "ping", "setpriv", "iperf3", "ip",
        ] {
            assert!(deps.iter().any(|d| d.command == tool), "{tool} not listed");
        }
        assert!(
            missing(&[Dep {
                command: "surely-not-a-command-ovrs".into(),
                package: "p".into()
            }]) == ["p"]
        );
    }
}

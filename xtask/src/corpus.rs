//! `cargo xtask corpus [--update]`: every config of `tests/corpus/` through openvpn-rs's
//! `--check-config` (via `tests/corpus/oracle.sh` with `OURS=`), compared with what the real
//! OpenVPN 2.6 did with the same file (`tests/corpus/expected.tsv`) and with the last
//! accepted result (`tests/corpus/ours.tsv`): a file that passed before and fails now is an
//! error; the pass rates are printed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// One verdict: `ok`, or `fail` with the first error.
type Verdicts = BTreeMap<(String, String), (bool, String)>;

/// Parses a `role<TAB>file<TAB>ok|fail<TAB>note` table (a header line is skipped).
pub(crate) fn parse(text: &str) -> Verdicts {
    text.lines()
        .filter(|l| !l.starts_with("role\t") && !l.trim().is_empty())
        .filter_map(|l| {
            let mut f = l.splitn(4, '\t');
            let role = f.next()?.to_owned();
            let file = f.next()?.to_owned();
            let ok = f.next()? == "ok";
            Some(((role, file), (ok, f.next().unwrap_or("").to_owned())))
        })
        .collect()
}

fn render(v: &Verdicts) -> String {
    let mut s = String::from("role\tfile\tours\tnote\n");
    for ((role, file), (ok, note)) in v {
        let verdict = if *ok { "ok" } else { "fail" };
        s.push_str(&format!("{role}\t{file}\t{verdict}\t{note}\n"));
    }
    s
}

/// The summary lines and the regressions (files in `before` that were ok and are not now).
pub(crate) fn compare(real: &Verdicts, before: &Verdicts, now: &Verdicts) -> (String, Vec<String>) {
    let mut summary = String::new();
    for role in ["server", "client"] {
        let files: Vec<_> = real.keys().filter(|k| k.0 == role).collect();
        let real_ok: Vec<_> = files.iter().filter(|k| real[**k].0).collect();
        let ours_ok = real_ok
            .iter()
            .filter(|k| now.get(***k).is_some_and(|v| v.0))
            .count();
        summary.push_str(&format!(
            "corpus: {role}: {} files, the real 2.6 starts {}, openvpn-rs accepts {ours_ok} of those ({}%)\n",
            files.len(),
            real_ok.len(),
            (ours_ok * 100).checked_div(real_ok.len()).unwrap_or(0)
        ));
    }
    let regressions = before
        .iter()
        .filter(|(_, (ok, _))| *ok)
        .filter(|(k, _)| !now.get(*k).is_some_and(|v| v.0))
        .map(|((role, file), _)| {
            let note = now
                .get(&(role.clone(), file.clone()))
                .map_or("missing", |v| &v.1);
            format!("{role}/{file}: {note}")
        })
        .collect();
    (summary, regressions)
}

/// Runs the corpus; `update` rewrites `tests/corpus/ours.tsv` with today's verdicts.
pub(crate) fn run(root: &Path, update: bool) -> Result<()> {
    let dir = root.join("tests/corpus");
    let status = Command::new(crate::cargo())
        .args(["build", "-p", "openvpn-server", "-p", "openvpn-client"])
        .current_dir(root)
        .status()
        .context("cargo build")?;
    if !status.success() {
        bail!("cannot build the binaries");
    }
    let out = Command::new("bash")
        .arg(dir.join("oracle.sh"))
        .env("OURS", root.join("target/debug"))
        .current_dir(root)
        .output()
        .context("cannot run tests/corpus/oracle.sh")?;
    if !out.status.success() {
        bail!("oracle.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let now = parse(&String::from_utf8_lossy(&out.stdout));
    let real = parse(&std::fs::read_to_string(dir.join("expected.tsv"))?);
    let baseline = dir.join("ours.tsv");
    let before = parse(&std::fs::read_to_string(&baseline).unwrap_or_default());
    let (summary, regressions) = compare(&real, &before, &now);
    print!("{summary}");
    for ((role, file), (ok, note)) in &now {
        if !ok && real.get(&(role.clone(), file.clone())).is_some_and(|v| v.0) {
            println!("corpus: not accepted: {role}/{file}: {note}");
        }
    }
    if update {
        std::fs::write(&baseline, render(&now))?;
        println!("corpus: wrote {}", baseline.display());
    }
    if !regressions.is_empty() {
        bail!(
            "{} corpus file(s) accepted before are refused now:\n{}",
            regressions.len(),
            regressions.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_passed_before_and_fails_now_is_a_regression() {
        let real = parse("role\tfile\treal\tnote\nserver\ta.conf\tok\t\nserver\tb.conf\tok\t\n");
        let before = parse("server\ta.conf\tok\t\nserver\tb.conf\tfail\tx\n");
        let now = parse("server\ta.conf\tfail\tconfig line 3: nope\nserver\tb.conf\tok\t\n");
        let (summary, reg) = compare(&real, &before, &now);
        assert!(summary.contains("accepts 1 of those (50%)"), "{summary}");
        assert_eq!(reg, ["server/a.conf: config line 3: nope"]);
        assert!(compare(&real, &now, &now).1.is_empty());
    }
}

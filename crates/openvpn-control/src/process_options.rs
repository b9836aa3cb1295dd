//! The process options both roles share, parsed in one place: `cd`, `nice`, `mlock` and
//! `setenv-safe`. The binaries apply the first three at start-up
//! (`openvpn_tun::process::apply_start`); `setenv-safe` is one more script variable.
//!
//! ```text
//!  OptionLine ──ProcessOptions::apply(line, &mut base)──▶ ProcessOptions { cd, nice, mlock }
//!             └─setenv_safe(line)──────────────────────▶ ("OPENVPN_" + name, value)
//! ```
//!
//! As in OpenVPN, `cd DIR` takes effect where it stands: relative paths of the lines after it
//! are read from `DIR` (the loader's `base` moves), and the process works there.

use std::path::PathBuf;

use crate::loading::{LoadError, arg, invalid, number};
use crate::options::OptionLine;

/// `cd`, `nice`, `mlock`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessOptions {
    /// `cd DIR`: the working directory (resolved against the directory in force before it).
    pub cd: Option<PathBuf>,
    /// `nice N`: added to the scheduling priority at start-up (positive = lower priority).
    pub nice: i32,
    /// `mlock`: lock all memory (keys never reach swap).
    pub mlock: bool,
}

impl ProcessOptions {
    /// Interprets `o` if it is one of this group's options (true), else leaves it (false).
    /// `cd` checks that the directory exists and moves `base` there.
    pub fn apply(&mut self, o: &OptionLine, base: &mut PathBuf) -> Result<bool, LoadError> {
        match o.name.as_str() {
            "cd" => {
                max_args(o, 1)?;
                let dir = base.join(arg(o, 0)?);
                if !dir.is_dir() {
                    return Err(invalid(
                        o,
                        format!("cd to '{}' failed: not a directory", dir.display()),
                    ));
                }
                *base = dir.clone();
                self.cd = Some(dir);
            }
            "nice" => {
                max_args(o, 1)?;
                self.nice = number(o, 0)?;
            }
            "mlock" => {
                max_args(o, 0)?;
                self.mlock = true;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn max_args(o: &OptionLine, n: usize) -> Result<(), LoadError> {
    if o.args.len() > n {
        return Err(invalid(o, format!("takes at most {n} argument(s)")));
    }
    Ok(())
}

/// `setenv-safe NAME [VALUE]`: the script variable `OPENVPN_NAME` (OpenVPN prefixes the name
/// so that a pushed one cannot set `LD_PRELOAD` and the like). Characters of the name other
/// than letters, digits and `_` become `_`, as OpenVPN remaps variable names.
pub fn setenv_safe(o: &OptionLine) -> Result<(String, String), LoadError> {
    max_args(o, 2)?;
    let name: String = arg(o, 0)?
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    // OpenVPN builds the name in a 64-byte buffer.
    if name.len() + "OPENVPN_".len() >= 64 {
        return Err(invalid(
            o,
            "the name is too long (OPENVPN_NAME must stay under 64 characters)",
        ));
    }
    Ok((format!("OPENVPN_{name}"), o.arg(1).unwrap_or("").to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse_config;

    fn lines(text: &str) -> Vec<OptionLine> {
        parse_config(text).expect("parse")
    }

    #[test]
    fn cd_moves_the_base_of_later_paths_and_must_exist() {
        let dir = std::env::temp_dir().join(format!("ovrs-cd-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("keys")).expect("mkdir");
        let mut p = ProcessOptions::default();
        let mut base = dir.clone();
        for o in lines("cd keys\nnice 5\nmlock\n") {
            assert!(p.apply(&o, &mut base).expect("apply"), "{}", o.name);
        }
        assert_eq!(base, dir.join("keys"));
        assert_eq!(
            p,
            ProcessOptions {
                cd: Some(dir.join("keys")),
                nice: 5,
                mlock: true,
            }
        );
        // An absolute directory replaces the base.
        let o = &lines(&format!("cd {}\n", dir.display()))[0];
        p.apply(o, &mut base).expect("absolute cd");
        assert_eq!(base, dir);
        let _ = std::fs::remove_dir_all(&dir);
        for (text, want) in [
            ("cd /no/such/dir/ovrs\n", "not a directory"),
            ("cd\n", "argument"),
            ("nice low\n", "not a valid number"),
            ("nice 1 2\n", "at most 1"),
            ("mlock yes\n", "at most 0"),
        ] {
            let o = &lines(text)[0];
            let e = ProcessOptions::default()
                .apply(o, &mut PathBuf::from("/"))
                .expect_err(text)
                .to_string();
            assert!(e.contains("line 1") && e.contains(want), "{text:?}: {e}");
        }
        let o = &lines("nice -5\n")[0];
        let mut q = ProcessOptions::default();
        q.apply(o, &mut PathBuf::from("/")).expect("negative nice");
        assert_eq!(q.nice, -5);
        assert!(!q.apply(&lines("verb 3\n")[0], &mut base).expect("other"));
    }

    #[test]
    fn setenv_safe_prefixes_and_remaps_the_name() {
        let one = |t: &str| setenv_safe(&lines(t)[0]);
        assert_eq!(
            one("setenv-safe FOO bar\n").expect("ok"),
            ("OPENVPN_FOO".into(), "bar".into())
        );
        assert_eq!(
            one("setenv-safe LD_PRELOAD /x.so\n").expect("ok").0,
            "OPENVPN_LD_PRELOAD"
        );
        assert_eq!(
            one("setenv-safe my-var\n").expect("ok"),
            ("OPENVPN_my_var".into(), String::new())
        );
        assert!(one("setenv-safe A b c\n").is_err());
        assert!(one("setenv-safe\n").is_err());
        assert!(one(&format!("setenv-safe {} x\n", "N".repeat(60))).is_err());
    }
}

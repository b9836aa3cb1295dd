//! `fuzz-smoke [--seconds N] [--seed N] [--target NAME] [--max-mutants N]`: runs every fuzz
//! target over its seeds and fixed-seed mutants on stable Rust (see `smoke.rs`).

use std::process::ExitCode;
use std::time::Duration;

use openvpn_fuzz_targets::smoke::{self, SmokeOptions};

fn parse_args() -> Result<SmokeOptions, String> {
    let mut o = SmokeOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--seconds" => {
                let v = value("--seconds")?;
                let s: f64 = v
                    .parse()
                    .map_err(|_| format!("--seconds: '{v}' is not a number"))?;
                o.budget = Duration::from_secs_f64(s.max(0.0));
            }
            "--seed" => {
                let v = value("--seed")?;
                o.seed = v
                    .parse()
                    .map_err(|_| format!("--seed: '{v}' is not an integer"))?;
            }
            "--max-mutants" => {
                let v = value("--max-mutants")?;
                o.max_mutants = v
                    .parse()
                    .map_err(|_| format!("--max-mutants: '{v}' is not an integer"))?;
            }
            "--target" => o.filter = Some(value("--target")?),
            "-h" | "--help" => {
                return Err(
                    "usage: fuzz-smoke [--seconds N] [--seed N] [--target NAME] [--max-mutants N]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fuzz-smoke: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "fuzz-smoke: {:.0} s budget, seed {}, targets {}",
        opts.budget.as_secs_f64(),
        opts.seed,
        opts.filter.as_deref().unwrap_or("all")
    );
    let reports = smoke::run(&opts);
    let mut failed = false;
    for r in &reports {
        println!(
            "  {:<16} {:>5} seeds {:>8} mutants {:>6.1} s  {}",
            r.name,
            r.seeds,
            r.mutants,
            r.elapsed.as_secs_f64(),
            if r.crashes.is_empty() {
                "ok"
            } else {
                "CRASHED"
            }
        );
        for c in &r.crashes {
            failed = true;
            println!("      crash input saved to {}", c.display());
        }
    }
    if reports.is_empty() {
        eprintln!("fuzz-smoke: no target matches");
        return ExitCode::FAILURE;
    }
    if failed {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

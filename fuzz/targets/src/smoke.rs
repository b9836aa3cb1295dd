//! The stable smoke runner behind `cargo xtask fuzz-smoke`: every target over its seeds,
//! then over mutants of them (bit flips, byte sets, truncation, splicing, chunk copies) from
//! a fixed-seed generator, until its share of the time budget is used.
//!
//! ```text
//!  seeds: fuzz/seeds/vectors/*.bin (test-vectors.md) + fuzz/seeds/<target>/* + generated
//!     └─▶ run(seed) ─▶ mutate(seed, other seed) ─▶ run(mutant) … ─▶ report / crash file
//! ```

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{TARGETS, Target, control_session, data_open, decompress};

/// Options of one smoke run.
#[derive(Clone, Debug)]
pub struct SmokeOptions {
    /// Total time budget, shared equally by the targets.
    pub budget: Duration,
    /// Seed of the mutation generator.
    pub seed: u64,
    /// Run only targets whose name contains this.
    pub filter: Option<String>,
    /// At most this many mutants per target.
    pub max_mutants: u64,
    /// The `fuzz/` folder (seeds are read from `seeds/`, crashes written to `artifacts/`).
    pub fuzz_dir: PathBuf,
}

impl Default for SmokeOptions {
    fn default() -> Self {
        SmokeOptions {
            budget: Duration::from_secs(20),
            seed: 0x6f70_656e_7670_6e21,
            filter: None,
            max_mutants: u64::MAX,
            fuzz_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        }
    }
}

/// What happened to one target.
#[derive(Clone, Debug)]
pub struct TargetReport {
    /// Target name.
    pub name: &'static str,
    /// Seeds run.
    pub seeds: usize,
    /// Mutants run.
    pub mutants: u64,
    /// Inputs that panicked, with the file each was saved to.
    pub crashes: Vec<PathBuf>,
    /// Time spent.
    pub elapsed: Duration,
}

/// A small deterministic generator (xorshift64*), so that a run can be repeated.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Derives a mutant of `input`, splicing from `other` now and then.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        match rng.below(9) {
            0 | 1 if !v.is_empty() => {
                let bit = rng.below(v.len() * 8);
                v[bit / 8] ^= 1 << (bit % 8);
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = [0x00, 0xff, 0x7f, 0x80, 0x01, rng.next_u64() as u8][rng.below(6)];
            }
            3 if !v.is_empty() => {
                let n = rng.below(v.len());
                v.truncate(n);
            }
            4 => {
                let n = 1 + rng.below(16);
                for _ in 0..n {
                    let at = rng.below(v.len() + 1);
                    v.insert(at, rng.next_u64() as u8);
                }
            }
            5 if !other.is_empty() => {
                // splice: our prefix, their suffix
                let a = rng.below(v.len() + 1);
                let b = rng.below(other.len());
                v.truncate(a);
                v.extend_from_slice(&other[b..]);
            }
            6 if v.len() > 1 => {
                // delete a chunk
                let a = rng.below(v.len());
                let n = 1 + rng.below((v.len() - a).min(32));
                v.drain(a..a + n);
            }
            7 if !v.is_empty() => {
                // copy a chunk of ourselves elsewhere
                let a = rng.below(v.len());
                let n = 1 + rng.below((v.len() - a).min(32));
                let chunk = v[a..a + n].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, chunk);
            }
            _ if !other.is_empty() => {
                // insert a chunk of the other seed
                let a = rng.below(other.len());
                let n = 1 + rng.below((other.len() - a).min(64));
                let at = rng.below(v.len() + 1);
                v.splice(at..at, other[a..a + n].iter().copied());
            }
            _ => v.push(rng.next_u64() as u8),
        }
    }
    v.truncate(8192);
    v
}

fn read_dir_files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    paths
        .iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// The seeds of one target: test vectors, its seed folder and generated inputs.
pub fn seeds(fuzz_dir: &Path, target: &str) -> Vec<Vec<u8>> {
    let vectors = read_dir_files(&fuzz_dir.join("seeds/vectors"));
    let mut out = read_dir_files(&fuzz_dir.join("seeds").join(target));
    match target {
        "control_session" => {
            out.extend(control_session::seed_inputs());
            for v in &vectors {
                // A vector as a raw datagram to a server and to a client, each wrapping.
                for mode in [0u8, 1, 4, 5, 8, 9] {
                    let mut s = vec![mode, 0, (v.len() >> 8) as u8, v.len() as u8];
                    s.extend_from_slice(v);
                    out.push(s);
                }
            }
        }
        "data_open" => {
            out.extend(vectors.iter().cloned());
            out.extend(data_open::seed_inputs());
        }
        "option_parse" => {
            let texts = [
                "client\ndev tun\nproto udp\nremote vpn.example.com 1194\n<ca>\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n</ca>\ncipher AES-256-GCM\n",
                "PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 60,ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm dyn-tls-crypt,tun-mtu 1500",
                "--client\x00--remote\x00host\x001194\x00--verb\x003\x00--setenv\x00A B\x00\"q\"",
                "remote \"a b\" 'c d' e\\ f # comment\n; other\n<connection>\nremote x\n</connection>\n",
                "PUSH_REPLY,dhcp-option DNS 10.8.0.1,route 10.0.0.0 255.0.0.0,push-continuation 2",
            ];
            for (i, t) in texts.iter().enumerate() {
                for mode in 0..3u8 {
                    let mut s = vec![mode + 3 * i as u8];
                    s.extend_from_slice(t.as_bytes());
                    out.push(s);
                }
            }
        }
        "wire_control" => {
            out.extend(vectors.iter().cloned());
            out.extend(control_session::seed_packets());
        }
        "wire_data" => {
            out.extend(vectors.iter().cloned());
            out.extend(data_open::seed_inputs());
        }
        "wire_tcp_stream" => {
            for (i, p) in control_session::seed_packets().iter().enumerate() {
                let mut s = vec![(i * 37) as u8];
                openvpn_wire::frame_tcp(p, &mut s).ok();
                openvpn_wire::frame_tcp(p, &mut s).ok();
                out.push(s);
            }
        }
        "wire_km2" => out.extend(control_session::seed_km2()),
        "decompress" => out.extend(decompress::seed_inputs(fuzz_dir)),
        _ => out.extend(vectors.iter().cloned()),
    }
    if out.is_empty() {
        out.push(vec![]);
    }
    out
}

fn run_one(target: &Target, input: &[u8]) -> bool {
    catch_unwind(AssertUnwindSafe(|| (target.run)(input))).is_ok()
}

fn save_crash(fuzz_dir: &Path, target: &str, n: usize, input: &[u8]) -> PathBuf {
    let dir = fuzz_dir.join("artifacts").join(target);
    let path = dir.join(format!("smoke-crash-{n}.bin"));
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(&path, input);
    path
}

/// Runs the smoke test of every selected target; returns one report per target.
pub fn run(opts: &SmokeOptions) -> Vec<TargetReport> {
    let selected: Vec<&Target> = TARGETS
        .iter()
        .filter(|t| opts.filter.as_deref().is_none_or(|f| t.name.contains(f)))
        .collect();
    let share = opts.budget / (selected.len().max(1) as u32);
    let mut reports = vec![];
    for (ti, target) in selected.iter().enumerate() {
        let start = Instant::now();
        let seeds = seeds(&opts.fuzz_dir, target.name);
        let mut crashes = vec![];
        for s in &seeds {
            if !run_one(target, s) {
                crashes.push(save_crash(&opts.fuzz_dir, target.name, crashes.len(), s));
            }
        }
        let mut rng = Rng::new(opts.seed ^ (ti as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut mutants = 0u64;
        while start.elapsed() < share && mutants < opts.max_mutants && crashes.len() < 5 {
            let a = &seeds[rng.below(seeds.len())];
            let b = &seeds[rng.below(seeds.len())];
            let m = mutate(&mut rng, a, b);
            mutants += 1;
            if !run_one(target, &m) {
                crashes.push(save_crash(&opts.fuzz_dir, target.name, crashes.len(), &m));
            }
        }
        reports.push(TargetReport {
            name: target.name,
            seeds: seeds.len(),
            mutants,
            crashes,
            elapsed: start.elapsed(),
        });
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutation_is_deterministic_and_bounded() {
        let mut a = Rng::new(5);
        let mut b = Rng::new(5);
        for i in 0..1000 {
            let s = vec![i as u8; i % 50];
            let m1 = mutate(&mut a, &s, b"other");
            let m2 = mutate(&mut b, &s, b"other");
            assert_eq!(m1, m2);
            assert!(m1.len() <= 8192);
        }
    }

    #[test]
    fn every_target_has_seeds_and_they_pass() {
        let opts = SmokeOptions::default();
        for t in TARGETS {
            let seeds = seeds(&opts.fuzz_dir, t.name);
            assert!(!seeds.is_empty(), "{}", t.name);
            for s in seeds.iter().take(20) {
                (t.run)(s);
            }
        }
    }
}

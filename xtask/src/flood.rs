//! `cargo xtask flood-send ADDR COUNT`: bounded junk at an OpenVPN server port, for the
//! interop flood case (run inside ovrs-cli by `ip netns exec`).
//!
//! Sends COUNT datagrams (at most 50 000) over about 5 s from one unconnected UDP socket:
//! random bytes of random length, truncated packets (1-3 bytes) with valid opcode bytes,
//! data-channel-looking packets (`0x48`, peer id 0, a counting packet id, junk), hard resets
//! (`0x38`) and control packets (`0x20`) with random session ids, and exact replays of one
//! data-looking packet. Only the harness's own namespace addresses (10.77.0.0/16, fd77::/16)
//! are accepted as targets.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

/// A tiny xorshift generator: junk needs no cryptographic quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

/// Whether `addr` is one of the interop namespaces' addresses.
fn allowed(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(v4) => v4.octets()[..2] == [10, 77],
        IpAddr::V6(v6) => v6.segments()[0] == 0xfd77,
    }
}

/// The `i`th junk datagram.
fn datagram(rng: &mut Rng, i: u32, replay: &[u8]) -> Vec<u8> {
    const OPCODES: [u8; 4] = [0x48, 0x38, 0x20, 0x28];
    match i % 6 {
        0 => {
            let mut p = vec![0; 1 + rng.below(1400)];
            rng.fill(&mut p);
            p
        }
        1 => {
            let mut p = vec![0; 1 + rng.below(3)];
            rng.fill(&mut p);
            p[0] = OPCODES[rng.below(OPCODES.len())];
            p
        }
        2 => {
            // P_DATA_V2, key id 0, peer id 0, packet id, then tag + ciphertext junk.
            let mut p = vec![0x48, 0, 0, 0];
            p.extend_from_slice(&i.to_be_bytes());
            let mut body = vec![0; 16 + rng.below(200)];
            rng.fill(&mut body);
            p.extend_from_slice(&body);
            p
        }
        3 | 4 => {
            // A hard reset or control packet: session id, then junk of a plausible size.
            let mut p = vec![if i % 6 == 3 { 0x38 } else { 0x20 }];
            let mut body = vec![0; 8 + 16 + rng.below(300)];
            rng.fill(&mut body);
            p.extend_from_slice(&body);
            p
        }
        _ => replay.to_vec(),
    }
}

pub(crate) fn send(args: &[String]) -> Result<()> {
    let [addr, count] = args else {
        bail!("usage: cargo xtask flood-send ADDR:PORT COUNT");
    };
    let addr: SocketAddr = addr.parse().context("ADDR:PORT")?;
    if !allowed(&addr) {
        bail!("flood-send only targets the interop namespaces (10.77.x.x, fd77::), not {addr}");
    }
    let count: u32 = count.parse().context("COUNT")?;
    if count > 50_000 {
        bail!("COUNT is bounded at 50000");
    }
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind).context("cannot bind a UDP socket")?;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
        | 1;
    let mut rng = Rng(seed);
    let replay = datagram(&mut rng, 2, &[]);
    let started = Instant::now();
    let (mut sent, mut errors, mut bytes) = (0u32, 0u32, 0usize);
    for i in 0..count {
        let p = datagram(&mut rng, i, &replay);
        match sock.send_to(&p, addr) {
            Ok(n) => {
                sent += 1;
                bytes += n;
            }
            Err(_) => errors += 1,
        }
        // About 5 s for 20 000 datagrams: 100 every 25 ms.
        if i % 100 == 99 {
            sleep(Duration::from_millis(25));
        }
    }
    println!(
        "flood-send: {sent} datagrams ({bytes} bytes) to {addr} in {:.1}s, {errors} send errors",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_namespace_targets() {
        let ok = |s: &str| allowed(&s.parse().expect("addr"));
        assert!(ok("10.77.0.1:1194"));
        assert!(ok("[fd77::1]:1194"));
        assert!(!ok("10.8.0.1:1194"));
        assert!(!ok("8.8.8.8:53"));
        assert!(!ok("[::1]:1194"));
    }

    #[test]
    fn datagrams_are_bounded_and_varied() {
        let mut rng = Rng(42);
        let replay = datagram(&mut rng, 2, &[]);
        let all: Vec<Vec<u8>> = (0..600).map(|i| datagram(&mut rng, i, &replay)).collect();
        assert!(all.iter().all(|p| !p.is_empty() && p.len() <= 1400));
        assert!(all.iter().any(|p| p.len() <= 3 && p[0] == 0x48));
        assert!(all.iter().any(|p| p[0] == 0x38));
        assert_eq!(all.iter().filter(|p| **p == replay).count(), 100);
    }
}

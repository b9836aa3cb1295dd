//! The IPv4/IPv6 address pool of `server` / `server-ipv6` (topology subnet).

use std::net::{Ipv4Addr, Ipv6Addr};

/// An address with its prefix length.
pub type V4Net = (Ipv4Addr, u8);
/// An IPv6 address with its prefix length.
pub type V6Net = (Ipv6Addr, u8);

/// Hands out tunnel addresses: the i-th lease is `net+2+i` (IPv4) and `net+0x1000+i` (IPv6).
#[derive(Debug, Clone)]
pub struct AddressPool {
    v4: Option<(Ipv4Addr, u8)>,
    v6: Option<(Ipv6Addr, u8)>,
    used: Vec<bool>,
    /// `(index, count)`: this pool hands out only entries `≡ index (mod count)` (one
    /// worker's share, `workers N`).
    partition: (usize, usize),
}

/// One client's tunnel addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Pool index.
    pub index: usize,
    /// IPv4 address.
    pub v4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub v6: Option<Ipv6Addr>,
}

fn prefix_len(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}

impl AddressPool {
    /// A pool for `server NET MASK` and `server-ipv6 NET/BITS`.
    pub fn new(v4: Option<(Ipv4Addr, Ipv4Addr)>, v6: Option<(Ipv6Addr, u8)>) -> Self {
        let v4 = v4.map(|(n, m)| (Ipv4Addr::from(u32::from(n) & u32::from(m)), prefix_len(m)));
        let size_v4 = v4.map_or(usize::MAX, |(_, p)| {
            (1usize << (32 - u32::from(p).min(31))).saturating_sub(4)
        });
        let size_v6 = v6.map_or(usize::MAX, |(_, p)| {
            if p >= 112 {
                (1usize << (128 - u32::from(p))).saturating_sub(0x1001)
            } else {
                65536
            }
        });
        AddressPool {
            v4,
            v6,
            used: vec![false; size_v4.min(size_v6).min(65536)],
            partition: (0, 1),
        }
    }

    /// Restricts this pool to entries `≡ index (mod count)`: each of `count` workers gets
    /// its own share of one address range.
    pub fn set_partition(&mut self, index: usize, count: usize) {
        self.partition = (index % count.max(1), count.max(1));
    }

    fn mine(&self, i: usize) -> bool {
        i % self.partition.1 == self.partition.0
    }

    /// The server's own addresses (network + 1).
    pub fn server_addresses(&self) -> (Option<V4Net>, Option<V6Net>) {
        (
            self.v4.map(|(n, p)| (Ipv4Addr::from(u32::from(n) + 1), p)),
            self.v6.map(|(n, p)| (Ipv6Addr::from(u128::from(n) + 1), p)),
        )
    }

    /// IPv4 netmask of the pool.
    pub fn netmask_v4(&self) -> Option<Ipv4Addr> {
        self.v4.map(|(_, p)| {
            Ipv4Addr::from(if p == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(p))
            })
        })
    }

    /// Leases the lowest free address pair.
    pub fn lease(&mut self) -> Option<Lease> {
        self.lease_preferring(|_| false)
    }

    /// Leases the lowest free address pair whose index `avoid` does not flag (addresses kept
    /// for other clients by `ifconfig-pool-persist`), or else the lowest free one.
    pub fn lease_preferring(&mut self, avoid: impl Fn(usize) -> bool) -> Option<Lease> {
        let free = |i: &usize| !self.used[*i] && self.mine(*i);
        let index = (0..self.used.len())
            .filter(free)
            .find(|&i| !avoid(i))
            .or_else(|| (0..self.used.len()).find(free))?;
        self.lease_index(index)
    }

    /// The pool index of IPv4 address `a` (or, without IPv4, IPv6 address `a6`).
    pub fn index_of(&self, a: Option<Ipv4Addr>, a6: Option<Ipv6Addr>) -> Option<usize> {
        let i = match (self.v4, a, self.v6, a6) {
            (Some((n, _)), Some(a), _, _) => u32::from(a).checked_sub(u32::from(n) + 2)? as usize,
            (None, _, Some((n, _)), Some(a)) => {
                u128::from(a).checked_sub(u128::from(n) + 0x1000)? as usize
            }
            _ => return None,
        };
        (i < self.used.len()).then_some(i)
    }

    /// Leases pool entry `index` if it is free.
    pub fn lease_index(&mut self, index: usize) -> Option<Lease> {
        if *self.used.get(index)? || !self.mine(index) {
            return None;
        }
        self.used[index] = true;
        Some(Lease {
            index,
            v4: self
                .v4
                .map(|(n, _)| Ipv4Addr::from(u32::from(n) + 2 + index as u32)),
            v6: self
                .v6
                .map(|(n, _)| Ipv6Addr::from(u128::from(n) + 0x1000 + index as u128)),
        })
    }

    /// Returns a lease.
    pub fn release(&mut self, lease: &Lease) {
        if let Some(u) = self.used.get_mut(lease.index) {
            *u = false;
        }
    }

    /// The PUSH options for a lease.
    pub fn push_options(&self, lease: &Lease) -> Vec<String> {
        let mut v = Vec::new();
        let (s4, s6) = self.server_addresses();
        if let (Some(a), Some((s, p))) = (lease.v6, s6) {
            v.push(format!("ifconfig-ipv6 {a}/{p} {s}"));
        }
        if let (Some(a), Some(m)) = (lease.v4, self.netmask_v4()) {
            let _ = s4;
            v.push(format!("ifconfig {a} {m}"));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_hand_out_disjoint_addresses() {
        let net = Some((
            "10.8.0.0".parse().unwrap(),
            "255.255.255.0".parse().unwrap(),
        ));
        let mut a = AddressPool::new(net, None);
        let mut b = AddressPool::new(net, None);
        a.set_partition(0, 2);
        b.set_partition(1, 2);
        let la: Vec<_> = (0..3)
            .map(|_| a.lease().unwrap().v4.unwrap().to_string())
            .collect();
        let lb: Vec<_> = (0..3)
            .map(|_| b.lease().unwrap().v4.unwrap().to_string())
            .collect();
        assert_eq!(la, ["10.8.0.2", "10.8.0.4", "10.8.0.6"]);
        assert_eq!(lb, ["10.8.0.3", "10.8.0.5", "10.8.0.7"]);
        assert!(a.lease_index(1).is_none(), "entry 1 is the other worker's");
    }

    #[test]
    fn leases_like_openvpn() {
        let mut p = AddressPool::new(
            Some((
                "10.8.0.0".parse().unwrap(),
                "255.255.255.0".parse().unwrap(),
            )),
            Some(("fd08::".parse().unwrap(), 64)),
        );
        assert_eq!(
            p.server_addresses().0,
            Some(("10.8.0.1".parse().unwrap(), 24))
        );
        let a = p.lease().unwrap();
        assert_eq!(a.v4, Some("10.8.0.2".parse().unwrap()));
        assert_eq!(a.v6, Some("fd08::1000".parse().unwrap()));
        assert_eq!(
            p.push_options(&a),
            vec![
                "ifconfig-ipv6 fd08::1000/64 fd08::1",
                "ifconfig 10.8.0.2 255.255.255.0"
            ]
        );
        let b = p.lease().unwrap();
        assert_eq!(b.v4, Some("10.8.0.3".parse().unwrap()));
        p.release(&a);
        assert_eq!(p.lease().unwrap().index, 0);
        let mut small = AddressPool::new(
            Some((
                "10.9.0.0".parse().unwrap(),
                "255.255.255.248".parse().unwrap(),
            )),
            None,
        );
        assert_eq!((0..10).filter_map(|_| small.lease()).count(), 4);
    }
}

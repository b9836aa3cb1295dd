//! The IPv4/IPv6 address pool of `server` / `server-ipv6`, in OpenVPN's three topologies.
//!
//! ```text
//!  server 10.8.0.0/24   server    clients                         pushed
//!  subnet               .1/24     .2, .3, … (one address each)    ifconfig .2 255.255.255.0
//!  net30                .1 (.2)   /30 blocks from .4: .6, .10, …  ifconfig .6 .5
//!  p2p                  .1 (.2)   .4, .5, … (one address each)    ifconfig .4 .1
//! ```
//! IPv6 (`server-ipv6`) is the same in every topology: `net+0x1000+i`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// `ifconfig-pool-persist` memory: common name → addresses.
pub type PersistMap = BTreeMap<String, (Option<Ipv4Addr>, Option<Ipv6Addr>)>;

/// The pool's leases and what `ifconfig-pool-persist` remembers, behind one lock that the
/// workers of a server share (`workers N`); a lease is taken once per connecting client.
#[derive(Debug)]
pub struct Leases {
    pool: AddressPool,
    persist: PersistMap,
    /// Pool entry → (token of its current lease, common name it was leased for).
    holders: BTreeMap<usize, (u64, Option<String>)>,
    next_token: u64,
}

/// [`Leases`] shared by the cores of one server.
pub type SharedLeases = Arc<Mutex<Leases>>;

impl Leases {
    /// Leases from `pool`, remembering `persist` (read from the persist file).
    pub fn new(pool: AddressPool, persist: PersistMap) -> Self {
        Leases {
            pool,
            persist,
            holders: BTreeMap::new(),
            next_token: 1,
        }
    }

    /// Records `lease` as handed out now (a fresh token) for `cn`.
    fn hand_out(&mut self, mut lease: Lease, cn: Option<&str>) -> Lease {
        lease.token = self.next_token;
        self.next_token += 1;
        self.holders
            .insert(lease.index, (lease.token, cn.map(str::to_owned)));
        lease
    }

    /// A lease for a client with common name `cn`: with `persist`, the address it had
    /// before if still free — or, with `take_over`, still held by an older connection with
    /// the same name (that is being closed; its later release does not free the entry) —
    /// else one no other remembered client had, else any; the choice is remembered.
    pub fn lease_for(&mut self, cn: Option<&str>, persist: bool, take_over: bool) -> Option<Lease> {
        if !persist {
            let lease = self.pool.lease()?;
            return Some(self.hand_out(lease, cn));
        }
        let remembered = cn.and_then(|cn| self.persist.get(cn)).copied();
        let own = remembered.and_then(|(a, a6)| self.pool.index_of(a, a6));
        let held_by_same_name = |i: usize| {
            take_over && cn.is_some() && self.holders.get(&i).is_some_and(|h| h.1.as_deref() == cn)
        };
        let taken_over =
            own.filter(|i| held_by_same_name(*i))
                .zip(remembered)
                .map(|(index, (v4, v6))| Lease {
                    index,
                    v4,
                    v6,
                    token: 0,
                });
        let lease = match taken_over.or_else(|| own.and_then(|i| self.pool.lease_index(i))) {
            Some(l) => Some(l),
            None => {
                let reserved: Vec<usize> = self
                    .persist
                    .iter()
                    .filter(|(k, _)| Some(k.as_str()) != cn)
                    .filter_map(|(_, (a, a6))| self.pool.index_of(*a, *a6))
                    .collect();
                self.pool.lease_preferring(|i| reserved.contains(&i))
            }
        }?;
        if let Some(cn) = cn.filter(|c| !c.is_empty()) {
            self.persist.insert(cn.to_owned(), (lease.v4, lease.v6));
        }
        Some(self.hand_out(lease, cn))
    }

    /// Returns a lease (its persisted entry stays); a lease taken over since does nothing.
    pub fn release(&mut self, lease: &Lease) {
        if self.holders.get(&lease.index).map(|h| h.0) == Some(lease.token) {
            self.holders.remove(&lease.index);
            self.pool.release(lease);
        }
    }

    /// The `ifconfig-pool-persist` file text: `common_name,ipv4[,ipv6]` per line.
    pub fn persist_text(&self) -> String {
        let mut s = String::new();
        for (cn, (v4, v6)) in &self.persist {
            s.push_str(cn);
            s.push(',');
            if let Some(a) = v4 {
                s.push_str(&a.to_string());
            }
            if let Some(a) = v6 {
                s.push_str(&format!(",{a}"));
            }
            s.push('\n');
        }
        s
    }
}

/// `topology`: how IPv4 tunnel addresses are laid out (OpenVPN's default, when the config has
/// no `topology` line, is `net30`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    /// One address per client in the server's subnet; the server is `.1`.
    Subnet,
    /// A /30 per client: the client's address and a virtual peer address (`.6` and `.5`).
    #[default]
    Net30,
    /// One address per client from `.4`, with the server's `.1` as its point-to-point peer.
    P2p,
}

impl Topology {
    /// The option's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Subnet => "subnet",
            Topology::Net30 => "net30",
            Topology::P2p => "p2p",
        }
    }
}

/// An address with its prefix length.
pub type V4Net = (Ipv4Addr, u8);
/// An IPv6 address with its prefix length.
pub type V6Net = (Ipv6Addr, u8);

/// The address ranges of `server NET MASK` and `server-ipv6 NET/BITS` (network and prefix
/// length) without any lease state: what the tun device and the pushed options need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShape {
    v4: Option<(Ipv4Addr, u8)>,
    v6: Option<(Ipv6Addr, u8)>,
    topology: Topology,
    /// An explicit `ifconfig-pool START END` (offsets from the network), instead of the
    /// range `server` implies.
    v4_range: Option<(u32, u32)>,
    /// An explicit `ifconfig-ipv6-pool START/BITS` (offset from the network).
    v6_start: Option<u128>,
}

/// Hands out tunnel addresses: the i-th lease is `net+2+i` (IPv4) and `net+0x1000+i` (IPv6).
#[derive(Debug, Clone)]
pub struct AddressPool {
    shape: PoolShape,
    used: Vec<bool>,
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
    /// Which hand-out of this entry it is ([`Leases`]: only the current holder's release
    /// frees the entry).
    pub token: u64,
}

fn prefix_len(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}

impl PoolShape {
    /// The ranges of `server NET MASK` and `server-ipv6 NET/BITS`.
    pub fn new(v4: Option<(Ipv4Addr, Ipv4Addr)>, v6: Option<(Ipv6Addr, u8)>) -> Self {
        PoolShape {
            v4: v4.map(|(n, m)| (Ipv4Addr::from(u32::from(n) & u32::from(m)), prefix_len(m))),
            v6,
            topology: Topology::Subnet,
            v4_range: None,
            v6_start: None,
        }
    }

    /// These ranges laid out in `topology`, with explicit pool bounds (`ifconfig-pool START
    /// END`, `ifconfig-ipv6-pool START`) where a config gives them.
    pub fn with_layout(
        self,
        topology: Topology,
        pool_v4: Option<(Ipv4Addr, Ipv4Addr)>,
        pool_v6_start: Option<Ipv6Addr>,
    ) -> Self {
        PoolShape {
            topology,
            v4_range: pool_v4.and_then(|(a, b)| {
                let (n, _) = self.v4?;
                Some((
                    u32::from(a).checked_sub(u32::from(n))?,
                    u32::from(b).checked_sub(u32::from(n))?,
                ))
            }),
            v6_start: pool_v6_start.and_then(|a| {
                let (n, _) = self.v6?;
                u128::from(a).checked_sub(u128::from(n))
            }),
            ..self
        }
    }

    /// The topology.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// The IPv4 address of pool entry `index`.
    fn v4_at(&self, index: usize) -> Option<Ipv4Addr> {
        let (n, _) = self.v4?;
        let i = u32::try_from(index).ok()?;
        let start = self.v4_start();
        let offset = match self.topology {
            Topology::Subnet | Topology::P2p => start + i,
            Topology::Net30 => start + 4 * i + 2,
        };
        Some(Ipv4Addr::from(u32::from(n).checked_add(offset)?))
    }

    /// The pool entry of IPv4 address `a`.
    fn v4_index(&self, a: Ipv4Addr) -> Option<usize> {
        let (n, _) = self.v4?;
        let off = u32::from(a).checked_sub(u32::from(n))?;
        let rel = off.checked_sub(self.v4_start())?;
        let i = match self.topology {
            Topology::Subnet | Topology::P2p => rel,
            Topology::Net30 => {
                if rel % 4 != 2 {
                    return None;
                }
                rel / 4
            }
        };
        usize::try_from(i).ok()
    }

    /// The offset of the first IPv6 pool address (0x1000 unless `ifconfig-ipv6-pool` says).
    fn v6_offset(&self) -> u128 {
        self.v6_start.unwrap_or(0x1000)
    }

    /// The offset of the pool's first address (or, for net30, of its first /30).
    fn v4_start(&self) -> u32 {
        match (self.v4_range, self.topology) {
            (Some((start, _)), _) => start,
            (None, Topology::Subnet) => 2,
            (None, Topology::Net30 | Topology::P2p) => 4,
        }
    }

    /// The `ifconfig` option pushed for a client with address `local`: `ifconfig A MASK`
    /// (subnet), `ifconfig A PEER` (net30: the /30's other host address; p2p: the server's
    /// address). `second` is the second argument of a client-config-dir `ifconfig-push`,
    /// which wins where given.
    pub fn ifconfig_push(&self, local: Ipv4Addr, second: Option<Ipv4Addr>) -> Option<String> {
        let second = match (second, self.topology) {
            (Some(s), _) => s,
            (None, Topology::Subnet) => self.netmask_v4()?,
            (None, Topology::Net30) => Ipv4Addr::from(u32::from(local) ^ 3),
            (None, Topology::P2p) => self.server_addresses().0?.0,
        };
        Some(format!("ifconfig {local} {second}"))
    }

    /// The options `server` adds to the push list in this topology (before the config's
    /// own `push` lines), as OpenVPN 2.6 does.
    pub fn server_push(&self, client_to_client: bool) -> Vec<String> {
        let mut v = vec![format!("topology {}", self.topology.as_str())];
        let Some((server, _)) = self.server_addresses().0 else {
            return v;
        };
        match self.topology {
            Topology::Subnet => v.push(format!("route-gateway {server}")),
            Topology::Net30 | Topology::P2p if client_to_client => {
                if let (Some((n, _)), Some(m)) = (self.v4, self.netmask_v4()) {
                    v.push(format!("route {n} {m}"));
                }
            }
            Topology::Net30 => v.push(format!("route {server}")),
            Topology::P2p => {}
        }
        v
    }

    /// How many clients the ranges hold (at most 65536).
    fn entries(&self) -> usize {
        let size_v4 = self.v4.map_or(usize::MAX, |(_, p)| {
            let size = 1usize << (32 - u32::from(p).min(31));
            match (self.v4_range, self.topology) {
                (Some((start, end)), Topology::Net30) => {
                    (end.saturating_sub(start) as usize + 1) / 4
                }
                (Some((start, end)), _) => end.saturating_sub(start) as usize + 1,
                (None, Topology::Subnet) => size.saturating_sub(4),
                // OpenVPN's pool runs from net+4 to net+size-5.
                (None, Topology::Net30) => size.saturating_sub(8) / 4,
                (None, Topology::P2p) => size.saturating_sub(8),
            }
        });
        let size_v6 = self.v6.map_or(usize::MAX, |(_, p)| {
            if p >= 112 {
                (1usize << (128 - u32::from(p))).saturating_sub(0x1001)
            } else {
                65536
            }
        });
        size_v4.min(size_v6).min(65536)
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

    /// The PUSH options for a lease.
    pub fn push_options(&self, lease: &Lease) -> Vec<String> {
        let mut v = Vec::new();
        let (_, s6) = self.server_addresses();
        if let (Some(a), Some((s, p))) = (lease.v6, s6) {
            v.push(format!("ifconfig-ipv6 {a}/{p} {s}"));
        }
        if let Some(line) = lease.v4.and_then(|a| self.ifconfig_push(a, None)) {
            v.push(line);
        }
        v
    }
}

impl AddressPool {
    /// A pool for `server NET MASK` and `server-ipv6 NET/BITS` (topology subnet).
    pub fn new(v4: Option<(Ipv4Addr, Ipv4Addr)>, v6: Option<(Ipv6Addr, u8)>) -> Self {
        Self::with_shape(PoolShape::new(v4, v6))
    }

    /// A pool of these ranges and topology.
    pub fn with_shape(shape: PoolShape) -> Self {
        AddressPool {
            shape,
            used: vec![false; shape.entries()],
        }
    }

    /// The ranges this pool hands addresses from.
    pub fn shape(&self) -> PoolShape {
        self.shape
    }

    /// Leases the lowest free address pair.
    pub fn lease(&mut self) -> Option<Lease> {
        self.lease_preferring(|_| false)
    }

    /// Leases the lowest free address pair whose index `avoid` does not flag (addresses kept
    /// for other clients by `ifconfig-pool-persist`), or else the lowest free one.
    pub fn lease_preferring(&mut self, avoid: impl Fn(usize) -> bool) -> Option<Lease> {
        let index = (0..self.used.len())
            .find(|&i| !self.used[i] && !avoid(i))
            .or_else(|| self.used.iter().position(|u| !u))?;
        self.lease_index(index)
    }

    /// The pool index of IPv4 address `a` (or, without IPv4, IPv6 address `a6`).
    pub fn index_of(&self, a: Option<Ipv4Addr>, a6: Option<Ipv6Addr>) -> Option<usize> {
        let i = match (self.shape.v4, a, self.shape.v6, a6) {
            (Some(_), Some(a), _, _) => self.shape.v4_index(a)?,
            (None, _, Some((n, _)), Some(a)) => {
                u128::from(a).checked_sub(u128::from(n) + self.shape.v6_offset())? as usize
            }
            _ => return None,
        };
        (i < self.used.len()).then_some(i)
    }

    /// Leases pool entry `index` if it is free.
    pub fn lease_index(&mut self, index: usize) -> Option<Lease> {
        if *self.used.get(index)? {
            return None;
        }
        self.used[index] = true;
        Some(Lease {
            index,
            v4: self.shape.v4_at(index),
            v6: self.shape.v6.map(|(n, _)| {
                Ipv6Addr::from(u128::from(n) + self.shape.v6_offset() + index as u128)
            }),
            token: 0,
        })
    }

    /// Returns a lease.
    pub fn release(&mut self, lease: &Lease) {
        if let Some(u) = self.used.get_mut(lease.index) {
            *u = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net30_and_p2p_lay_out_addresses_like_openvpn() {
        let net = Some((
            "10.8.0.0".parse().unwrap(),
            "255.255.255.0".parse().unwrap(),
        ));
        let shape = |t| PoolShape {
            topology: t,
            ..PoolShape::new(net, None)
        };
        let mut p = AddressPool::with_shape(shape(Topology::Net30));
        let a = p.lease().unwrap();
        let b = p.lease().unwrap();
        assert_eq!(a.v4, Some("10.8.0.6".parse().unwrap()));
        assert_eq!(b.v4, Some("10.8.0.10".parse().unwrap()));
        assert_eq!(p.shape().push_options(&a), ["ifconfig 10.8.0.6 10.8.0.5"]);
        assert_eq!(
            p.index_of(Some("10.8.0.10".parse().unwrap()), None),
            Some(1)
        );
        assert_eq!(p.index_of(Some("10.8.0.9".parse().unwrap()), None), None);
        // 10.8.0.4/30 … 10.8.0.248/30: 62 clients in a /24, as OpenVPN's pool.
        let mut n = 2;
        while p.lease().is_some() {
            n += 1;
        }
        assert_eq!(n, 62);
        assert_eq!(
            shape(Topology::Net30).server_push(false),
            ["topology net30", "route 10.8.0.1"]
        );
        assert_eq!(
            shape(Topology::Net30).server_push(true),
            ["topology net30", "route 10.8.0.0 255.255.255.0"]
        );
        let mut p = AddressPool::with_shape(shape(Topology::P2p));
        let a = p.lease().unwrap();
        assert_eq!(a.v4, Some("10.8.0.4".parse().unwrap()));
        assert_eq!(p.shape().push_options(&a), ["ifconfig 10.8.0.4 10.8.0.1"]);
        assert_eq!(shape(Topology::P2p).server_push(false), ["topology p2p"]);
        assert_eq!(
            shape(Topology::Subnet).server_push(false),
            ["topology subnet", "route-gateway 10.8.0.1"]
        );
        // A client-config-dir ifconfig-push's second address wins.
        assert_eq!(
            shape(Topology::Net30).ifconfig_push(
                "10.8.0.9".parse().unwrap(),
                Some("10.8.0.10".parse().unwrap())
            ),
            Some("ifconfig 10.8.0.9 10.8.0.10".into())
        );
    }

    #[test]
    fn persisted_addresses_come_back_and_are_kept_from_others() {
        let net = Some((
            "10.8.0.0".parse().unwrap(),
            "255.255.255.0".parse().unwrap(),
        ));
        let persist = crate::core::parse_pool_persist("alice,10.8.0.5\n");
        let mut l = Leases::new(AddressPool::new(net, None), persist);
        let bob = l.lease_for(Some("bob"), true, true).unwrap();
        assert_eq!(bob.v4, Some("10.8.0.2".parse().unwrap()));
        let alice = l.lease_for(Some("alice"), true, true).unwrap();
        assert_eq!(alice.v4, Some("10.8.0.5".parse().unwrap()));
        // Without persistence the lowest free entry, and nothing is remembered.
        let carol = l.lease_for(Some("carol"), false, true).unwrap();
        assert_eq!(carol.v4, Some("10.8.0.3".parse().unwrap()));
        // Alice reconnects while her old connection (on another worker) is still open: she
        // takes her address over; the old connection's release then frees nothing.
        let alice2 = l.lease_for(Some("alice"), true, true).unwrap();
        assert_eq!(alice2.v4, alice.v4);
        l.release(&alice);
        let dave = l.lease_for(Some("dave"), true, true).unwrap();
        assert_ne!(
            dave.v4, alice.v4,
            "the taken-over entry was freed by the old release"
        );
        // Without take-over (duplicate-cn), a second alice gets another address.
        let alice3 = l.lease_for(Some("alice"), true, false).unwrap();
        assert_ne!(alice3.v4, alice.v4);
        l.release(&alice2);
        let text = l.persist_text();
        // The last alice (a duplicate, without take-over) is what is remembered.
        assert!(
            text.contains("alice,10.8.0.6") && text.contains("bob,10.8.0.2"),
            "{text}"
        );
        assert!(!text.contains("carol"), "{text}");
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
            p.shape().server_addresses().0,
            Some(("10.8.0.1".parse().unwrap(), 24))
        );
        let a = p.lease().unwrap();
        assert_eq!(a.v4, Some("10.8.0.2".parse().unwrap()));
        assert_eq!(a.v6, Some("fd08::1000".parse().unwrap()));
        assert_eq!(
            p.shape().push_options(&a),
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

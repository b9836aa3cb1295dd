//! Sharding the server over worker tasks (`workers N`): each worker runs its own
//! [`crate::core::ServerCore`] for the clients that reached it, and the workers share only
//! what they need to hand each other packets.
//!
//! ```text
//!  UDP (SO_REUSEPORT, one socket per worker: the kernel keeps a client's 4-tuple on one)
//!    worker i ── data packet, peer-id of worker j ──▶ Forward::Link ──▶ worker j (float)
//!             ── control packet from an address worker j floated to ──▶ worker j
//!  tun (one device, every worker reads it)
//!    worker i ── destination owned by worker j (ShardTables::route) ──▶ Forward::Tun ──▶ j
//! ```
//!
//! Peer-ids on the wire are `slot * count + index` (the owner is `peer_id % count`, O(1)),
//! management client IDs likewise; the address pool is one, behind a lock taken once per
//! connecting client, so workers never hand out the same address. A float is still accepted only by the owner, after the
//! packet authenticated with the client's key.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::core::PeerAddr;

/// A packet one worker hands to another.
#[derive(Debug)]
pub enum Forward {
    /// A datagram from the link, for the client the target worker owns.
    Link(PeerAddr, Vec<u8>),
    /// An IP packet (from the tun device or another client) for one of the target's clients.
    Tun(Vec<u8>),
}

/// Which worker this core is and the tables all workers share.
#[derive(Clone, Debug)]
pub struct ShardInfo {
    /// This worker's index (`0..count`).
    pub index: u32,
    /// Number of workers.
    pub count: u32,
    /// The shared tables.
    pub tables: Arc<ShardTables>,
    /// The shared address pool and `ifconfig-pool-persist` memory.
    pub leases: crate::pool::SharedLeases,
    /// The cookie gate's key, the same in every worker (a client's first packet and its
    /// cookie echo may reach different workers after a float).
    pub gate_key: [u8; 32],
}

impl ShardInfo {
    /// The peer-id on the wire for table slot `slot`.
    pub fn wire_id(&self, slot: u32) -> u32 {
        slot.saturating_mul(self.count).saturating_add(self.index)
    }

    /// The slot of wire peer-id `wire` if this worker owns it, else `Err(owner)`.
    pub fn slot_of(&self, wire: u32) -> Result<u32, u32> {
        let owner = wire % self.count;
        if owner == self.index {
            Ok(wire / self.count)
        } else {
            Err(owner)
        }
    }
}

/// Tunnel addresses and iroutes → owning worker, and addresses clients floated to.
///
/// The route table is kept once per reading worker: a lookup takes only the reader's own
/// lock, so workers looking up at the same time do not bounce a shared reader count between
/// cores (`cargo bench -p openvpn-server --bench shard`: one shared lock costs ~4× per
/// lookup with a second reader); the rare writes (a client connects or leaves) update
/// every copy.
#[derive(Debug)]
pub struct ShardTables {
    copies: Vec<RwLock<Routes>>,
    floated: Mutex<HashMap<PeerAddr, u32>>,
    /// Which wire peer-ids belong to a client now: only their data is handed to the owner
    /// (random peer-ids from the network cannot fill the workers' queues).
    live: Vec<AtomicBool>,
    connect_seq: AtomicU64,
    /// Clients in all workers' tables together (what `max-clients` limits).
    clients: AtomicUsize,
}

#[derive(Debug, Default)]
struct Routes {
    v4: HashMap<Ipv4Addr, u32>,
    v6: HashMap<Ipv6Addr, u32>,
    prefixes: Vec<(IpAddr, u8, u32)>,
}

impl ShardTables {
    /// Tables for `workers` readers and wire peer-ids below `peer_ids`.
    pub fn new(workers: u32, peer_ids: usize) -> Self {
        ShardTables {
            copies: (0..workers.max(1))
                .map(|_| RwLock::new(Routes::default()))
                .collect(),
            floated: Mutex::new(HashMap::new()),
            live: (0..peer_ids).map(|_| AtomicBool::new(false)).collect(),
            connect_seq: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
        }
    }

    /// Counts a new client in, unless all workers together hold `max` already (then false:
    /// `max-clients` is one limit for the server, however the kernel spreads the clients).
    pub fn admit_client(&self, max: usize) -> bool {
        self.clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Counts a client out (its table slot was freed).
    pub fn release_client(&self) {
        let _ = self
            .clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Marks wire peer-id `wire` as used (`true`) or free.
    pub fn set_live(&self, wire: u32, live: bool) {
        if let Some(l) = self.live.get(wire as usize) {
            l.store(live, Ordering::Relaxed);
        }
    }

    /// Whether wire peer-id `wire` belongs to a client.
    pub fn is_live(&self, wire: u32) -> bool {
        self.live
            .get(wire as usize)
            .is_some_and(|l| l.load(Ordering::Relaxed))
    }

    /// A number that orders connections across workers (for `duplicate-cn`).
    pub fn next_connect_seq(&self) -> u64 {
        self.connect_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Applies `change` to every reader's copy.
    fn update(&self, change: impl Fn(&mut Routes)) {
        for copy in &self.copies {
            change(&mut copy.write().unwrap_or_else(|e| e.into_inner()));
        }
    }

    /// A client of `shard` has tunnel address `a`.
    pub fn insert_host(&self, a: IpAddr, shard: u32) {
        self.update(|r| {
            match a {
                IpAddr::V4(a) => r.v4.insert(a, shard),
                IpAddr::V6(a) => r.v6.insert(a, shard),
            };
        });
    }

    /// Forgets `a` if `shard` still owns it.
    pub fn remove_host(&self, a: IpAddr, shard: u32) {
        self.update(|r| match a {
            IpAddr::V4(a) if r.v4.get(&a) == Some(&shard) => {
                r.v4.remove(&a);
            }
            IpAddr::V6(a) if r.v6.get(&a) == Some(&shard) => {
                r.v6.remove(&a);
            }
            _ => {}
        });
    }

    /// An iroute `net/bits` behind a client of `shard`.
    pub fn add_prefix(&self, net: IpAddr, bits: u8, shard: u32) {
        self.update(|r| r.prefixes.push((net, bits, shard)));
    }

    /// Removes one iroute entry added with [`Self::add_prefix`].
    pub fn remove_prefix(&self, net: IpAddr, bits: u8, shard: u32) {
        self.update(|r| {
            if let Some(i) = r.prefixes.iter().position(|p| *p == (net, bits, shard)) {
                r.prefixes.swap_remove(i);
            }
        });
    }

    /// The worker owning destination `dst` (host address first, then the longest iroute),
    /// looked up in `reader`'s copy.
    pub fn route(&self, reader: u32, dst: IpAddr) -> Option<u32> {
        let copy = self.copies.get(reader as usize).or(self.copies.first())?;
        let r = copy.read().unwrap_or_else(|e| e.into_inner());
        let host = match dst {
            IpAddr::V4(a) => r.v4.get(&a),
            IpAddr::V6(a) => r.v6.get(&a),
        };
        host.copied()
            .or_else(|| crate::core::longest_prefix(&r.prefixes, dst))
    }

    /// A client of `shard` floated to `addr` (its datagrams may now reach another worker).
    pub fn floated_to(&self, addr: PeerAddr, shard: u32) {
        let mut f = self.floated.lock().unwrap_or_else(|e| e.into_inner());
        f.insert(addr, shard);
    }

    /// Forgets a floated address of `shard` (client gone or floated again).
    pub fn forget_float(&self, addr: &PeerAddr, shard: u32) {
        let mut f = self.floated.lock().unwrap_or_else(|e| e.into_inner());
        if f.get(addr) == Some(&shard) {
            f.remove(addr);
        }
    }

    /// The worker a client floated to `addr` belongs to.
    pub fn floated_owner(&self, addr: &PeerAddr) -> Option<u32> {
        let f = self.floated.lock().unwrap_or_else(|e| e.into_inner());
        f.get(addr).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(index: u32, count: u32) -> ShardInfo {
        ShardInfo {
            index,
            count,
            tables: Arc::new(ShardTables::new(count, 64)),
            leases: Arc::new(Mutex::new(crate::pool::Leases::new(
                crate::pool::AddressPool::new(None, None),
                Default::default(),
            ))),
            gate_key: [0; 32],
        }
    }

    #[test]
    fn max_clients_is_one_limit_for_all_workers() {
        let t = ShardTables::new(2, 8);
        assert!(t.admit_client(3));
        assert!(t.admit_client(3));
        assert!(t.admit_client(3));
        assert!(!t.admit_client(3), "a fourth client over max-clients 3");
        t.release_client();
        assert!(t.admit_client(3), "a freed place is taken again");
        for _ in 0..5 {
            t.release_client();
        }
        assert!(
            t.admit_client(1),
            "releasing more than admitted does not wrap"
        );
        assert!(!t.admit_client(1));
    }

    #[test]
    fn peer_ids_encode_the_owner() {
        let s1 = shard(1, 3);
        for slot in [0, 1, 7, 4000] {
            let wire = s1.wire_id(slot);
            assert_eq!(wire % 3, 1);
            assert_eq!(s1.slot_of(wire), Ok(slot));
            assert_eq!(shard(2, 3).slot_of(wire), Err(1));
        }
    }

    #[test]
    fn routes_prefer_hosts_then_longest_prefix_and_removal_checks_the_owner() {
        let t = ShardTables::new(2, 8);
        assert!(!t.is_live(5));
        t.set_live(5, true);
        assert!(t.is_live(5) && !t.is_live(4) && !t.is_live(1000));
        t.set_live(1000, true); // out of range: ignored
        let a: IpAddr = "10.8.0.5".parse().unwrap();
        t.insert_host(a, 1);
        t.add_prefix("192.168.0.0".parse().unwrap(), 16, 0);
        t.add_prefix("192.168.7.0".parse().unwrap(), 24, 1);
        assert_eq!(t.route(1, a), Some(1));
        assert_eq!(t.route(1, "192.168.7.9".parse().unwrap()), Some(1));
        assert_eq!(t.route(1, "192.168.8.9".parse().unwrap()), Some(0));
        assert_eq!(t.route(1, "10.9.0.1".parse().unwrap()), None);
        t.remove_host(a, 0); // not the owner: kept
        assert_eq!(t.route(1, a), Some(1));
        t.remove_host(a, 1);
        assert_eq!(t.route(1, a), None);
        assert_eq!(t.route(0, a), None, "every reader's copy is updated");
        t.remove_prefix("192.168.7.0".parse().unwrap(), 24, 1);
        assert_eq!(t.route(1, "192.168.7.9".parse().unwrap()), Some(0));
    }
}

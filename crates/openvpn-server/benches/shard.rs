//! The workers' shared tun routing table (`workers N`): what a lookup costs on the packet
//! path alone, and while another worker looks up all the time — in its own copy (what the
//! server does) and, for comparison, in the same copy (one shared lock: the reader count
//! bounces between the cores).
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use openvpn_server::shard::ShardTables;

fn table(clients: u32) -> Arc<ShardTables> {
    let t = Arc::new(ShardTables::new(2, 8192));
    for i in 0..clients {
        t.insert_host(IpAddr::V4(Ipv4Addr::from(0x0a08_0002 + i)), i % 2);
    }
    t
}

fn lookups(c: &mut Criterion) {
    let t = table(1000);
    let dst = IpAddr::V4(Ipv4Addr::new(10, 8, 1, 7));
    c.bench_function("shard route lookup, 1000 clients, uncontended", |b| {
        b.iter(|| black_box(t.route(0, black_box(dst))))
    });
    for (other_reader, what) in [(1, "its own copy"), (0, "the same copy")] {
        contended(c, &t, other_reader, what);
    }
}

fn contended(c: &mut Criterion, t: &Arc<ShardTables>, other_reader: u32, what: &str) {
    let dst = IpAddr::V4(Ipv4Addr::new(10, 8, 1, 7));
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (t, stop) = (Arc::clone(t), Arc::clone(&stop));
        std::thread::spawn(move || {
            let dst = IpAddr::V4(Ipv4Addr::new(10, 8, 0, 9));
            while !stop.load(Ordering::Relaxed) {
                black_box(t.route(other_reader, black_box(dst)));
            }
        })
    };
    c.bench_function(
        &format!("shard route lookup, 1000 clients, another worker looking up in {what}"),
        |b| b.iter(|| black_box(t.route(0, black_box(dst)))),
    );
    stop.store(true, Ordering::Relaxed);
    other.join().unwrap();
}

criterion_group!(benches, lookups);
criterion_main!(benches);

//! Fuzz target bodies as plain functions, `pub fn run(data: &[u8])`, for the cargo-fuzz
//! binaries (`../fuzz_targets`, nightly) and the stable smoke runner (`fuzz-smoke`).
//!
//! ```text
//!  libfuzzer ──┐                      ┌─ wire::{control, data, tcp_stream, km2}
//!              ├─▶ TARGETS[i].run ───┼─ control_session (client/server Session, pair)
//!  fuzz-smoke ─┘   (seeds, mutants)   ├─ option_parse (config / push / cli round trips)
//!                                     ├─ data_open (DataChannel with fixed keys)
//!                                     └─ decompress (LZO1X / LZ4, compressed framings)
//! ```

pub mod control_session;
pub mod data_open;
pub mod decompress;
pub mod option_parse;
pub mod smoke;
pub mod wire;

/// One fuzz target: its cargo-fuzz name and body.
#[derive(Clone, Copy)]
pub struct Target {
    /// The cargo-fuzz binary name (also the seed folder under `fuzz/seeds/`).
    pub name: &'static str,
    /// The body.
    pub run: fn(&[u8]),
}

/// Every target, in the order the smoke runner runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "wire_control",
        run: wire::control::run,
    },
    Target {
        name: "wire_data",
        run: wire::data::run,
    },
    Target {
        name: "wire_tcp_stream",
        run: wire::tcp_stream::run,
    },
    Target {
        name: "wire_km2",
        run: wire::km2::run,
    },
    Target {
        name: "control_session",
        run: control_session::run,
    },
    Target {
        name: "option_parse",
        run: option_parse::run,
    },
    Target {
        name: "data_open",
        run: data_open::run,
    },
    Target {
        name: "decompress",
        run: decompress::run,
    },
];

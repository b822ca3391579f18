//! Memory per token in a [`MemoryStore`] holding 1 000 000 records like the ones
//! `Tokens::issue` stores, and in a [`CachedStore`]'s cache holding as many, measured two
//! ways in one run:
//!
//! - live heap bytes, counted by an instrumented global allocator (bytes the program asked
//!   for, before the allocator's own rounding and headers);
//! - resident set size from `/proc/self/statm` (what the process really holds, allocator
//!   overhead and retained free memory included; Linux only).
//!
//! Then, in the same process, the median of `Tokens::authenticate` over tokens picked at
//! random in a store of 1 000 tokens and in one of 10 000 000 (its load time too).
//!
//! ```sh
//! cargo bench --bench memory
//! KEYGATE_MEMORY_N=100000 cargo bench --bench memory       # another store size
//! KEYGATE_MEMORY_LARGE=1000000 cargo bench --bench memory  # a smaller large store
//! ```

use std::alloc::System;
use std::hint::black_box;
use std::mem::{align_of, size_of};
use std::time::Instant;

use keygate::store::TokenRecord;
use keygate::store::cached::CachedStore;
use keygate::{MemoryStore, Permissions, TokenHash, TokenId, TokenKind, TokenStore, Tokens};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

// The crate forbids `unsafe`, and so a hand-written `GlobalAlloc`: this one counts for us.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const DEFAULT_N: usize = 1_000_000;
const DEFAULT_LARGE: usize = 10_000_000;
/// Tokens authenticated in each timed batch, and batches timed per store.
const BATCH: usize = 100;
const BATCHES: usize = 2_000;
const OWNERS: usize = 10_000;
const GOAL: f64 = 256.0;

/// SplitMix64's finaliser: a bijection on `u64`, so distinct inputs give distinct outputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random-looking digest, distinct for every `i` (its first 8 bytes are a bijection of
/// `i`), without hashing a million tokens.
fn digest(i: u64) -> TokenHash {
    let mut b = [0u8; 32];
    for (k, chunk) in b.chunks_mut(8).enumerate() {
        let word = if k == 0 {
            mix(i)
        } else {
            mix(i ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        };
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    TokenHash::from_bytes(b)
}

/// The display hint of a `pat` token: `pat_` and the first 8 base62 characters of its
/// secret.
fn hint(i: u64) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut s = String::with_capacity(12);
    s.push_str("pat_");
    let mut x = mix(!i);
    for _ in 0..8 {
        s.push(char::from(BASE62[(x % 62) as usize]));
        x /= 62;
    }
    s
}

/// A string with no spare capacity, as `Tokens::issue` stores them (clones of the request).
fn exact(mut s: String) -> String {
    s.shrink_to_fit();
    s
}

struct Shared {
    owners: Vec<String>,
    roles: Vec<Permissions>,
    created_at: time::OffsetDateTime,
}

impl Shared {
    fn new() -> Self {
        let roles = [
            &["tokens:read"][..],
            &["tokens:read", "tokens:write"],
            &["repo:read", "repo:write", "packages:read"],
            &["admin:*"],
        ]
        .iter()
        .map(|r| Permissions::parse(r.iter()).expect("valid permissions"))
        .collect();
        Self {
            owners: (0..OWNERS)
                .map(|k| exact(format!("user-{k}@example.com")))
                .collect(),
            roles,
            created_at: time::macros::datetime!(2026-01-01 00:00 UTC),
        }
    }

    /// Record `i`, shaped like one `Tokens::issue` stores for `NewToken::new(owner, name)`
    /// with a role's permissions, and (string heap bytes, string allocations) it holds.
    fn record(&self, i: u64) -> (TokenRecord, usize, usize) {
        let owner = &self.owners[(mix(i.wrapping_add(1)) % OWNERS as u64) as usize];
        let r = TokenRecord::new(
            TokenId::random(),
            digest(i),
            "pat",
            owner.as_str(),
            exact(format!("ci-{i:06}")),
            self.created_at + time::Duration::seconds(i as i64),
        )
        .with_permissions(self.roles[(i % self.roles.len() as u64) as usize].clone())
        .with_hint(hint(i));
        let caps = string_capacities(&r);
        let bytes = caps.iter().sum();
        let allocs = caps.iter().filter(|&&c| c > 0).count();
        (r, bytes, allocs)
    }
}

/// The heap bytes of the record's own strings: its name and hint when too long to be kept
/// inside the record. (Kind, owner and creator are shared: the store keeps one copy of each
/// distinct value, counted with its index.)
fn string_capacities(r: &TokenRecord) -> [usize; 2] {
    [&r.name, &r.hint].map(|s| if s.is_inline() { 0 } else { s.len() })
}

/// Resident set size in bytes, from `/proc/self/statm` (Linux).
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// The kernel page size, read from `/proc/self/smaps` (4 KiB when it cannot be read).
fn page_size() -> u64 {
    std::fs::read_to_string("/proc/self/smaps")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("KernelPageSize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4096, |kib| kib * 1024)
}

/// glibc malloc's cost of one allocation of `n` bytes: an 8-byte header, 16-byte steps,
/// 32 bytes at least.
fn malloc_chunk(n: usize) -> usize {
    ((n + 8 + 15) & !15).max(32)
}

fn per(bytes: f64, n: usize) -> f64 {
    bytes / n as f64
}

fn main() {
    let n: usize = std::env::var("KEYGATE_MEMORY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_N);
    let shared = Shared::new();
    // A throwaway record first, so lazily initialised globals (the UUID generator's thread
    // RNG) are not counted against the store.
    black_box(shared.record(u64::MAX));

    let rss_before = rss();
    let region = Region::new(GLOBAL);
    let start = Instant::now();
    let store = MemoryStore::new();
    let (mut string_bytes, mut string_allocs) = (0usize, 0usize);
    for i in 0..n as u64 {
        let (r, b, a) = shared.record(i);
        string_bytes += b;
        string_allocs += a;
        store.insert_unchecked(r).expect("distinct ids and digests");
    }
    let built = start.elapsed();
    let heap = region.change();
    let rss_after = rss();

    // The store must really hold them.
    let probe = digest(n as u64 / 2);
    let found = store
        .find_by_hash_now(&probe)
        .expect("in-memory answer")
        .expect("no error")
        .expect("record present");
    assert!(found.hash.ct_eq(&probe));
    assert_eq!(store.len(), n);

    // stats_alloc books a reallocation's growth (shrink) in bytes_allocated (deallocated)
    // too, so these two alone give the live bytes.
    let live = heap.bytes_allocated as f64 - heap.bytes_deallocated as f64;
    let live_allocs = heap.allocations as f64 - heap.deallocations as f64;
    let record = size_of::<TokenRecord>();
    // `Arc`'s block: its two counters, then the record at the record's alignment.
    let arc_block = (2 * size_of::<usize>()).next_multiple_of(align_of::<TokenRecord>()) + record;
    let strings = per(string_bytes as f64, n);
    let records_part = arc_block as f64 + strings;
    let overhead = per(live, n) - records_part;
    let rss_per = match (rss_before, rss_after) {
        (Some(b), Some(a)) => format!("{:>8.1}", per(a as f64 - b as f64, n)),
        _ => format!("{:>8}", "n/a"),
    };
    // The allocator's real cost of the record and its strings (glibc sizes), for comparison
    // with the resident figure.
    let strings_malloc = per(
        (0..n.min(10_000) as u64)
            .map(|i| {
                let (r, _, _) = shared.record(i);
                string_capacities(&r)
                    .map(|c| if c == 0 { 0 } else { malloc_chunk(c) })
                    .iter()
                    .sum::<usize>()
            })
            .sum::<usize>() as f64,
        n.min(10_000),
    );

    println!();
    println!("MemoryStore memory, {n} tokens ({OWNERS} owners), built in {built:.2?}");
    println!();
    println!("| measure                                   | bytes/token |");
    println!("| ----------------------------------------- | ----------- |");
    println!(
        "| live heap (counting allocator)            | {:>11.1} |",
        per(live, n)
    );
    println!("| resident set (/proc/self/statm)           | {rss_per:>11} |");
    println!("| goal                                      | {GOAL:>11.1} |");
    println!();
    println!("Breakdown of the live heap per token:");
    println!();
    println!("| part                                      | bytes/token |");
    println!("| ----------------------------------------- | ----------- |");
    println!("| size_of::<TokenRecord>()                  | {record:>11} |");
    println!("| Arc<TokenRecord> block (counters, align)  | {arc_block:>11} |");
    println!(
        "| name/hint heap ({:.1} allocations)          | {strings:>11.1} |",
        per(string_allocs as f64, n)
    );
    println!("| map / index overhead (the rest)           | {overhead:>11.1} |");
    println!(
        "| live allocations per token                | {:>11.2} |",
        per(live_allocs, n)
    );
    println!();
    println!(
        "With glibc's chunk rounding the record costs {} (Arc) + {strings_malloc:.0} (strings) \
         = {:.0} bytes before any map.",
        malloc_chunk(arc_block),
        malloc_chunk(arc_block) as f64 + strings_malloc
    );
    // The same records through a `CachedStore`'s cache: every one looked up once, so the
    // cache holds them all. Its entries share the store's records here; a database-backed
    // store decodes a record of its own per entry, which costs the record's block again.
    let cached = CachedStore::new(store.clone()).with_capacity(n);
    let rss_before = rss();
    let region = Region::new(GLOBAL);
    let rt = runtime();
    rt.block_on(async {
        for i in 0..n as u64 {
            let found = cached.find_by_hash(&digest(i)).await.expect("no error");
            black_box(found.expect("record present"));
        }
    });
    let heap = region.change();
    let rss_after = rss();
    let cache_live = per(
        heap.bytes_allocated as f64 - heap.bytes_deallocated as f64,
        n,
    );
    let cache_rss = match (rss_before, rss_after) {
        (Some(b), Some(a)) => per(a as f64 - b as f64, n),
        _ => f64::NAN,
    };
    let record_block = per(live, n) - overhead;
    println!();
    println!("CachedStore cache, {n} entries ({} held)", cached.len());
    println!();
    println!("| measure                                   | bytes/token |");
    println!("| ----------------------------------------- | ----------- |");
    println!("| cache's own live heap (records shared)    | {cache_live:>11.1} |");
    println!("| cache's own resident set                  | {cache_rss:>11.1} |");
    println!(
        "| with a record of its own per entry (heap) | {:>11.1} |",
        cache_live + record_block
    );
    drop(black_box(cached));
    drop(black_box(store));

    let large: usize = std::env::var("KEYGATE_MEMORY_LARGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LARGE);
    let small = latency(&rt, &shared, 1_000);
    let big = latency(&rt, &shared, large);
    println!();
    println!(
        "Tokens::authenticate over random tokens, same process (load, then median of {BATCHES} batches of {BATCH}):"
    );
    println!();
    println!("| tokens      | load      | median per authenticate |");
    println!("| ----------- | --------- | ----------------------- |");
    for (size, (load, median)) in [(1_000, small), (large, big)] {
        println!("| {size:>11} | {load:>9.2?} | {median:>20.1} ns |");
    }
    println!();
    println!("ratio large / small: {:.3}", big.1 / small.1);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Loads `n` records into a `MemoryStore` (one in every `n / 1000` a real `pat` token, the
/// rest synthetic digests), then times `Tokens::authenticate` over the real ones picked at
/// random. Returns (load time, median ns per authentication).
fn latency(rt: &tokio::runtime::Runtime, shared: &Shared, n: usize) -> (std::time::Duration, f64) {
    let every = (n / 1_000).max(1) as u64;
    let start = Instant::now();
    let store = MemoryStore::new();
    let mut raws = Vec::with_capacity(1_000);
    for i in 0..n as u64 {
        let (mut r, _, _) = shared.record(i);
        if i % every == 0 {
            let raw = TokenKind::pat().generate();
            r.hash = raw.hash();
            raws.push(raw);
        }
        store.insert_unchecked(r).expect("distinct ids and digests");
    }
    let load = start.elapsed();
    let tokens = Tokens::new(store);
    let mut times = Vec::with_capacity(BATCHES);
    let mut pick = 0x2545_F491_4F6C_DD1Du64;
    rt.block_on(async {
        for _ in 0..BATCHES {
            let batch: Vec<&str> = (0..BATCH)
                .map(|_| {
                    pick = mix(pick);
                    raws[(pick % raws.len() as u64) as usize].expose_secret()
                })
                .collect();
            let t = Instant::now();
            for raw in batch {
                black_box(tokens.authenticate(raw).await.expect("valid token"));
            }
            times.push(t.elapsed().as_nanos() as f64 / BATCH as f64);
        }
    });
    times.sort_by(f64::total_cmp);
    drop(black_box(tokens));
    (load, times[times.len() / 2])
}

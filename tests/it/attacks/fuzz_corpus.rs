//! Fuzzing in the test command (issue 6, family 7): the same target bodies `cargo fuzz` runs
//! (`fuzz/bodies.rs`: path canonicalizer, token pre-parser, config loading) over the checked-in
//! corpus (`fuzz/corpus/<target>/`, where crash reproducers are added as regression inputs) and a
//! fixed number of deterministic mutations of it. Coverage-guided runs need nightly features
//! (`RUSTC_BOOTSTRAP=1 cargo fuzz run <target>`); see `fuzz/README.md`.

#[path = "../../../fuzz/bodies.rs"]
mod bodies;

use std::path::PathBuf;

/// Pieces a mutation splices in: separators, escapes, look-alikes, JOSE and YAML syntax.
const DICTIONARY: &[&str] = &[
    "/",
    "//",
    ".",
    "..",
    "%",
    "%2e",
    "%2E",
    "%2f",
    "%5c",
    "%00",
    "%25",
    "%C0%AE",
    "%EF%BC%8F",
    ";",
    "\\",
    "?",
    "#",
    " ",
    "%20",
    "\u{0}",
    "\u{e9}",
    ".",
    "eyJ",
    "\"alg\"",
    "\"kid\"",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "null",
    "1e309",
    "-1",
    "\n",
    "  ",
    "- ",
    "&a",
    "*a",
    "!!",
    "---",
    "~",
    "RS256",
    "none",
    "jku",
    "crit",
    "=",
];

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => {
                let piece = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes();
                v.splice(at..at, piece.iter().copied());
            }
            3 if !v.is_empty() => {
                let end = (at + rng.below(8)).min(v.len());
                v.drain(at.min(end)..end);
            }
            4 => v.truncate(at),
            5 if !other.is_empty() => {
                let from = rng.below(other.len());
                let to = (from + rng.below(32)).min(other.len());
                v.splice(at..at, other[from..to].iter().copied());
            }
            _ => {
                if !v.is_empty() {
                    let i = rng.below(v.len());
                    let b = v[i];
                    v.insert(i, b);
                }
            }
        }
    }
    v
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let inputs: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!inputs.is_empty(), "empty corpus {}", dir.display());
    inputs
}

/// Every corpus input, then `mutations` mutated ones; a panic names the input.
fn run(target: &str, body: fn(&[u8]), mutations: usize) {
    let seeds = corpus(target);
    for s in &seeds {
        body(s);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ target.len() as u64);
    for i in 0..mutations {
        let seed = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed, other);
        let result = std::panic::catch_unwind(|| body(&input));
        assert!(
            result.is_ok(),
            "{target}: mutation {i} panicked on {:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn fuzz_path_canonicalizer_over_the_corpus() {
    run("path", bodies::path, 20_000);
}

#[test]
fn fuzz_token_preparser_over_the_corpus() {
    run("token", bodies::token, 5_000);
}

#[test]
fn fuzz_config_loading_over_the_corpus() {
    run("config", bodies::config, 2_000);
}

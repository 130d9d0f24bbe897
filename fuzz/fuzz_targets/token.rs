//! cargo-fuzz target: the token body of `fuzz/bodies.rs` (also run over the corpus by
//! `cargo test`, see `tests/it/attacks/fuzz_corpus.rs`).
#![no_main]

#[path = "../bodies.rs"]
#[allow(dead_code)]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::token(data));

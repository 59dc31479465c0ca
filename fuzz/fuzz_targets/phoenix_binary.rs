//! See `harness::phoenix_binary`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::phoenix_binary(data));

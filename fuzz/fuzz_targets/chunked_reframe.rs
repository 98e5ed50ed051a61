//! A chunked request body, split across reads, through the fast path's re-framing; see
//! `ferry_fuzz::reframe`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::reframe::check(data));

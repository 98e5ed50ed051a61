//! A request head through ferry's strict reading and two others; see `ferry_fuzz::request_wire`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::request_wire::check(data));

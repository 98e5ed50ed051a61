//! A backend's response, split across reads, through ferry's HTTP/1 client codec; see
//! `ferry_fuzz::response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::response::check(data));

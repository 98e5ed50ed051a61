//! A request head through ferry's safety rules; see `ferry_fuzz::request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::request::check(data));

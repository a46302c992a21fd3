#![no_main]
//! See docs/fuzzing.md and `voxrelay::fuzzing::sip_message`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| voxrelay::fuzzing::sip_message(data));

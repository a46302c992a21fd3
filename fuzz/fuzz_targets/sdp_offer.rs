#![no_main]
//! See docs/fuzzing.md and `voxrelay::fuzzing::sdp_offer`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| voxrelay::fuzzing::sdp_offer(data));

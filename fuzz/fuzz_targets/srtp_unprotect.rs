#![no_main]
//! See docs/fuzzing.md and `voxrelay::fuzzing::srtp_packets`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| voxrelay::fuzzing::srtp_packets(data));

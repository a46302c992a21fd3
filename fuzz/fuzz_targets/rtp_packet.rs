#![no_main]
//! See docs/fuzzing.md and `voxrelay::fuzzing::rtp_packets`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| voxrelay::fuzzing::rtp_packets(data));

#![no_main]
//! See docs/fuzzing.md and `voxrelay::fuzzing::rtcp_packet`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| voxrelay::fuzzing::rtcp_packet(data));

#![no_main]
//! See docs/fuzzing.md and `voxrelay::fuzzing::sim_client_events`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| voxrelay::fuzzing::sim_client_events(data));

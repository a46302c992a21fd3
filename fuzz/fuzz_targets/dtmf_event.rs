#![no_main]
//! See docs/fuzzing.md and `voxrelay::fuzzing::dtmf_events`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| voxrelay::fuzzing::dtmf_events(data));

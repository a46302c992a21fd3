#![no_main]
//! See docs/fuzzing.md and `voxrelay::fuzzing::realtime_events`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| voxrelay::fuzzing::realtime_events(data));

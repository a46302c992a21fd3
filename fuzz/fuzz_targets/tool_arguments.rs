#![no_main]
//! See docs/fuzzing.md and `voxrelay::fuzzing::tool_arguments`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| voxrelay::fuzzing::tool_arguments(data));

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../exercise/cni_config.rs"]
mod exercise;

fuzz_target!(|data: &[u8]| {
    exercise::cni_config(data);
});

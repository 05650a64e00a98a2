//! Fuzz target: any bytes as an experiment definition file. Parsing (`from_toml`) and
//! validation (`validate`) must return errors, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(def) = strategist::experiment::definition::from_toml(text) {
        let errors = def.validate();
        // What a valid definition promises to the code that serves it.
        if errors.is_empty() {
            let _ = def.max_window();
            let _ = def.reward_wait_duration();
            let _ = strategist::experiment::definition::windows(&def);
        }
    }
});

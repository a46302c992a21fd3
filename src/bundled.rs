//! The agents and simulator scenarios built into the binary: every `config/agents/*.toml` and
//! `config/scenarios/*.toml` of the source tree (the table is written by `build.rs`), so that
//! `voxrelay serve` works from any folder with no config file at all.
//!
//! A folder of agents on disk (`agents.dir`) extends these and replaces a bundled agent of
//! the same name; a `sim.scenario` that names a bundled scenario uses it, any other value is
//! a file path.

mod table {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
}

/// The bundled agent files: (file stem, TOML text), sorted by stem.
pub fn agents() -> &'static [(&'static str, &'static str)] {
    table::AGENTS
}

/// The bundled scenario called `name` (its file stem: `booking`, `echo`, `fault-mint-429`, …).
pub fn scenario(name: &str) -> Option<&'static str> {
    table::SCENARIOS
        .iter()
        .find(|(stem, _)| *stem == name)
        .map(|(_, text)| *text)
}

/// The names of the bundled scenarios, sorted.
pub fn scenario_names() -> impl Iterator<Item = &'static str> {
    table::SCENARIOS.iter().map(|(stem, _)| *stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_agent_and_scenario_is_bundled() {
        let stems: Vec<&str> = agents().iter().map(|(s, _)| *s).collect();
        assert_eq!(stems, ["billing", "receptionist"]);
        for name in ["booking", "echo", "fault-mint-429", "fault-session-expired"] {
            assert!(scenario(name).is_some(), "{name}");
        }
        assert!(scenario("README").is_none() && scenario("nope").is_none());
    }

    #[test]
    fn bundled_agents_refer_to_no_file() {
        // The binary carries only the TOML texts: a bundled agent with a hold sound (or any
        // other file) would need that file bundled too.
        for (stem, text) in agents() {
            let t: toml::Table = toml::from_str(text).unwrap();
            assert!(
                !t.contains_key("hold_sound"),
                "{stem}.toml names a hold_sound"
            );
        }
    }
}

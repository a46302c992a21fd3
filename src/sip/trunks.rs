//! Trunks and routes from the config: who may call, with which credentials, and which agent
//! answers a dialled number. IO-free.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::TrunkConfig;
pub use crate::config::TrunkError;
use crate::secret::Secret;

/// A trunk with its password read from the environment.
#[derive(Debug, Clone)]
pub struct Trunk {
    /// The config entry.
    pub cfg: TrunkConfig,
    /// The password, when `password_env` names one.
    pub password: Option<Secret>,
}

/// Who may call.
#[derive(Debug, Clone, Default)]
pub struct Trunks {
    trunks: Vec<Trunk>,
}

/// The verdict on a request's source.
#[derive(Debug, Clone, Copy)]
pub enum SourceVerdict<'a> {
    /// No trunks are configured: anyone may call.
    Open,
    /// From this trunk.
    Trunk(&'a Trunk),
    /// From no trunk's addresses.
    Unknown,
}

impl Trunks {
    /// Checks the entries and reads passwords with `env` (the process environment in the relay).
    pub fn new(
        cfgs: &[TrunkConfig],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, TrunkError> {
        let mut trunks = Vec::with_capacity(cfgs.len());
        for (i, c) in cfgs.iter().enumerate() {
            let password = c.check(i, &env)?;
            trunks.push(Trunk {
                cfg: c.clone(),
                password,
            });
        }
        Ok(Self { trunks })
    }

    /// All trunks.
    pub fn all(&self) -> &[Trunk] {
        &self.trunks
    }

    /// The trunk named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Trunk> {
        self.trunks.iter().find(|t| t.cfg.name == name)
    }

    /// Which trunk (if any) a source address belongs to.
    pub fn classify(&self, ip: IpAddr) -> SourceVerdict<'_> {
        if self.trunks.is_empty() {
            return SourceVerdict::Open;
        }
        self.trunks
            .iter()
            .find(|t| t.cfg.addresses.iter().any(|n| n.contains(&ip)))
            .map(SourceVerdict::Trunk)
            .unwrap_or(SourceVerdict::Unknown)
    }
}

/// Dialled number → agent.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    map: BTreeMap<String, String>,
}

impl Routes {
    /// From the `[routes]` table; keys are numbers (normalised to digits with an optional
    /// leading `+`) or `*` for every other number.
    pub fn new(map: &BTreeMap<String, String>) -> Self {
        Self {
            map: map.iter().map(|(k, v)| (normalise(k), v.clone())).collect(),
        }
    }

    /// The agent for a dialled number; with no routes at all, `default`. `None`: unknown.
    pub fn agent_for<'a>(&'a self, dialled: &str, default: &'a str) -> Option<&'a str> {
        if self.map.is_empty() {
            return Some(default);
        }
        let n = normalise(dialled);
        let without_plus = n.trim_start_matches('+');
        self.map
            .get(&n)
            .or_else(|| self.map.get(without_plus))
            .or_else(|| self.map.get(&format!("+{without_plus}")))
            .or_else(|| self.map.get("*"))
            .map(String::as_str)
    }
}

fn normalise(number: &str) -> String {
    if number == "*" {
        return "*".into();
    }
    let plus = number.trim().starts_with('+');
    let digits: String = number.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        // A name such as `reception`: compared as written, lower-cased.
        return number.trim().to_ascii_lowercase();
    }
    if plus {
        format!("+{digits}")
    } else {
        digits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(toml_text: &str) -> TrunkConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn sources_are_classified_by_cidr() {
        let t = Trunks::new(
            &[trunk(
                "name = \"main\"\naddresses = [\"203.0.113.0/24\", \"127.0.0.1/32\"]",
            )],
            |_| None,
        )
        .unwrap();
        assert!(
            matches!(t.classify("203.0.113.77".parse().unwrap()), SourceVerdict::Trunk(x) if x.cfg.name == "main")
        );
        assert!(matches!(
            t.classify("127.0.0.1".parse().unwrap()),
            SourceVerdict::Trunk(_)
        ));
        assert!(matches!(
            t.classify("127.0.0.2".parse().unwrap()),
            SourceVerdict::Unknown
        ));
        assert!(matches!(
            Trunks::default().classify("198.51.100.1".parse().unwrap()),
            SourceVerdict::Open
        ));
    }

    #[test]
    fn passwords_come_from_the_environment_and_never_print() {
        let cfg = trunk(
            "name = \"t\"\naddresses = [\"10.0.0.0/8\"]\nusername = \"u\"\npassword_env = \"PW\"\ninbound_auth = true",
        );
        let t = Trunks::new(std::slice::from_ref(&cfg), |k| {
            (k == "PW").then(|| "s3cr3t-pw".into())
        })
        .unwrap();
        assert_eq!(t.all()[0].password.as_ref().unwrap().expose(), "s3cr3t-pw");
        assert!(!format!("{t:?}").contains("s3cr3t"));
        let e = Trunks::new(&[cfg], |_| None).unwrap_err();
        assert_eq!(e.key, "trunks[0].password_env");
        assert!(e.reason.contains("PW"));
    }

    #[test]
    fn bad_entries_name_their_key() {
        let e = Trunks::new(&[trunk("name = \"t\"")], |_| None).unwrap_err();
        assert_eq!(e.key, "trunks[0].addresses");
        let e = Trunks::new(
            &[trunk("name = \"t\"\nregistrar = \"sip:r.example\"")],
            |_| None,
        )
        .unwrap_err();
        assert_eq!(e.key, "trunks[0].username");
        assert!(
            toml::from_str::<TrunkConfig>("name = \"t\"\naddresses = [\"not-an-ip\"]").is_err()
        );
    }

    #[test]
    fn routes_pick_the_agent_by_number() {
        let mut m = BTreeMap::new();
        m.insert("+1 (555) 123-0000".to_string(), "receptionist".to_string());
        m.insert("5550001".to_string(), "sales".to_string());
        let r = Routes::new(&m);
        assert_eq!(r.agent_for("+15551230000", "d"), Some("receptionist"));
        assert_eq!(r.agent_for("15551230000", "d"), Some("receptionist"));
        assert_eq!(r.agent_for("+5550001", "d"), Some("sales"));
        assert_eq!(r.agent_for("999", "d"), None);
        m.insert("*".to_string(), "fallback".to_string());
        assert_eq!(Routes::new(&m).agent_for("999", "d"), Some("fallback"));
        assert_eq!(Routes::default().agent_for("anything", "d"), Some("d"));
    }
}

//! Phone numbers: whatever the caller said, stored and compared in E.164 form.

use phonenumber::country::Id;
use phonenumber::Mode;

/// Longest input looked at; real numbers with formatting fit easily.
const MAX_INPUT: usize = 40;

/// Parses a two-letter region code such as `US` or `gb`.
pub fn parse_region(s: &str) -> Result<Id, String> {
    s.trim().to_ascii_uppercase().parse::<Id>().map_err(|_| {
        format!("unknown region {s:?} (use a two-letter country code such as US or DE)")
    })
}

/// Normalises `input` to E.164 (`+15551230000`), taking numbers without a country code as
/// being in `region`. The error is a sentence a caller can hear.
pub fn normalize(input: &str, region: Id) -> Result<String, String> {
    let said = input.trim();
    let sorry = || {
        format!("I could not understand the phone number {:?}; please say it again with all its digits.", shorten(said))
    };
    if said.is_empty() {
        return Err("The phone number is missing.".into());
    }
    // Only what people write in phone numbers; this also keeps odd input away from the parser.
    if said.len() > MAX_INPUT
        || !said
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.' | '/'))
        || !said.chars().any(|c| c.is_ascii_digit())
    {
        return Err(sorry());
    }
    // The parser is third-party code fed caller input: a panic in it must not take the call down.
    let parsed = std::panic::catch_unwind(|| phonenumber::parse(Some(region), said).ok())
        .ok()
        .flatten();
    match parsed {
        Some(n) if phonenumber::is_valid(&n) => Ok(n.format().mode(Mode::E164).to_string()),
        _ => Err(sorry()),
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(MAX_INPUT).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_and_international_forms_give_one_e164() {
        let us = parse_region("us").unwrap();
        assert_eq!(normalize("(201) 555-0123", us).unwrap(), "+12015550123");
        assert_eq!(normalize("+1 201 555 0123", us).unwrap(), "+12015550123");
        let gb = parse_region("GB").unwrap();
        assert_eq!(normalize("020 7946 0018", gb).unwrap(), "+442079460018");
        assert_eq!(normalize("+44 20 7946 0018", us).unwrap(), "+442079460018");
    }

    #[test]
    fn rubbish_is_refused_with_a_sentence() {
        let us = parse_region("US").unwrap();
        for bad in [
            "",
            "   ",
            "12",
            "call me maybe",
            "+1 201 555 0123 ext 5",
            "0000000000000000000000000000000000000000000",
            "+999 123",
        ] {
            let err = normalize(bad, us).unwrap_err();
            assert!(err.ends_with('.'), "{bad:?} -> {err}");
        }
        assert!(parse_region("XX").is_err());
    }
}

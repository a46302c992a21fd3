//! Patient names as the model passes them: cleaned, bounded.

/// Longest name kept, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// Strips control and invisible formatting characters, collapses white space and checks the
/// length. The error is a sentence a caller can hear.
pub fn clean(input: &str) -> Result<String, String> {
    let visible: String = input
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .filter(|c| !c.is_control() && !is_invisible(*c))
        .collect();
    let name = visible
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if name.is_empty() {
        return Err("The patient's name is missing; please ask for it.".into());
    }
    let n = name.chars().count();
    if n > MAX_NAME_CHARS {
        return Err(format!(
            "That name is {n} characters long; at most {MAX_NAME_CHARS} fit. Please ask for a shorter form of the name."
        ));
    }
    Ok(name)
}

/// Zero-width and bidirectional-override characters (Unicode format characters) that would
/// make a stored name display differently from what it says.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_and_bounded() {
        assert_eq!(clean("  Ada \t Lovelace\n").unwrap(), "Ada Lovelace");
        assert_eq!(
            clean("Ada\u{0}\u{7}\u{1b}[31m Love\u{202E}lace").unwrap(),
            "Ada[31m Lovelace"
        );
        assert_eq!(clean("Zoë Ångström").unwrap(), "Zoë Ångström");
        assert!(clean("").is_err());
        assert!(clean(" \u{0}\u{200B} ").is_err());
        assert!(clean(&"a".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(clean(&"a".repeat(MAX_NAME_CHARS + 1)).is_err());
    }
}

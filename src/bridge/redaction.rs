//! Personal data taken out of a call's stored record (`privacy.redact_transcripts`): phone
//! numbers, email addresses and the names the call's tools were given or gave back, in the
//! transcript's text and in the tools' arguments and results, become `[phone]`, `[email]` and
//! `[name]`. The live view of a call (the operator's, while it runs) is not touched; what is
//! written to the database is.
//!
//! Names cannot be told from other words by their shape, so the names redacted are the ones
//! the call itself handled: every string under a key naming a person (`name`,
//! `patient_name`, …) in the tools' arguments and results, word by word, wherever they appear.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

/// Keys of tool arguments and results whose string values are people's names.
const NAME_KEYS: &[&str] = &[
    "name",
    "patient_name",
    "full_name",
    "first_name",
    "last_name",
    "caller_name",
];
/// A phone number has at least this many digits.
const PHONE_MIN_DIGITS: usize = 7;

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}").expect("valid")
});
/// Digits with the separators people and models write numbers with.
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+?\(?\d[\d\s().-]*\d").expect("valid"));
/// An ISO date (2026-12-04), which has the shape of a number but is none.
static DATE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\d{4}-\d{2}-\d{2}$").expect("valid"));

/// What one call's record is redacted of.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Words of the names the call handled (2 characters or more), lower case, longest first.
    names: Vec<String>,
}

impl Redactor {
    /// A redactor for a call whose tool calls (`[{arguments, result, …}]`) are `tool_calls`.
    pub fn for_call(tool_calls: &Value) -> Self {
        let mut names = Vec::new();
        // a call's own `name` is its tool's: only what went in and came out names people
        for call in tool_calls.as_array().into_iter().flatten() {
            for key in ["arguments", "result"] {
                if let Some(v) = call.get(key) {
                    collect_names(v, false, &mut names);
                }
            }
        }
        names.sort_by(|a: &String, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        names.dedup();
        Self { names }
    }

    /// `text` with phone numbers, emails and the call's names replaced.
    pub fn text(&self, text: &str) -> String {
        let out = EMAIL.replace_all(text, "[email]");
        let out = PHONE.replace_all(&out, |c: &regex::Captures<'_>| {
            let m = &c[0];
            let digits = m.chars().filter(char::is_ascii_digit).count();
            if digits >= PHONE_MIN_DIGITS && !DATE.is_match(m.trim()) {
                "[phone]".to_string()
            } else {
                m.to_string()
            }
        });
        let mut out = out.into_owned();
        for name in &self.names {
            out = replace_word(&out, name, "[name]");
        }
        out
    }

    /// Every string in `v` redacted, keys kept.
    pub fn value(&self, v: &mut Value) {
        match v {
            Value::String(s) => *s = self.text(s),
            Value::Array(items) => items.iter_mut().for_each(|i| self.value(i)),
            Value::Object(map) => map.values_mut().for_each(|i| self.value(i)),
            _ => {}
        }
    }

    /// A stored transcript (turns with a `text`) and tool calls (`arguments`, `result`)
    /// redacted in place; ids, roles and times are left as they are.
    pub fn record(&self, transcript: &mut Value, tool_calls: &mut Value) {
        if let Value::Array(turns) = transcript {
            for turn in turns {
                if let Some(text) = turn.get_mut("text") {
                    self.value(text);
                }
            }
        }
        if let Value::Array(calls) = tool_calls {
            for call in calls {
                for key in ["arguments", "result"] {
                    if let Some(v) = call.get_mut(key) {
                        self.value(v);
                    }
                }
            }
        }
    }
}

/// Collects the words of every string under a name key of `v`.
fn collect_names(v: &Value, under_name_key: bool, out: &mut Vec<String>) {
    match v {
        Value::String(s) if under_name_key => {
            out.extend(
                s.split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '-')
                    .filter(|w| w.chars().count() >= 2)
                    .map(str::to_lowercase),
            );
        }
        Value::String(s) => {
            // arguments kept as the model's raw JSON text
            if let Ok(inner @ (Value::Object(_) | Value::Array(_))) = serde_json::from_str(s) {
                collect_names(&inner, false, out);
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|i| collect_names(i, under_name_key, out)),
        Value::Object(map) => {
            for (k, v) in map {
                let is_name = NAME_KEYS.contains(&k.to_ascii_lowercase().as_str());
                collect_names(v, is_name, out);
            }
        }
        _ => {}
    }
}

/// `text` with every whole-word, case-insensitive occurrence of `word` (lower case) replaced.
fn replace_word(text: &str, word: &str, with: &str) -> String {
    let lower = text.to_lowercase();
    // lower-casing can change byte lengths outside ASCII: then compare word by word instead
    if lower.len() != text.len() {
        return text
            .split_inclusive(|c: char| !c.is_alphanumeric())
            .map(|w| {
                let core = w.trim_end_matches(|c: char| !c.is_alphanumeric());
                if core.to_lowercase() == word {
                    format!("{with}{}", &w[core.len()..])
                } else {
                    w.to_string()
                }
            })
            .collect();
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (i, _) in lower.match_indices(word) {
        let end = i + word.len();
        let before = lower[..i].chars().next_back();
        let after = lower[end..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
        if i >= last && boundary(before) && boundary(after) {
            out.push_str(&text[last..i]);
            out.push_str(with);
            last = end;
        }
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_and_emails_go_whatever_their_shape_and_dates_and_codes_stay() {
        let r = Redactor::default();
        assert_eq!(
            r.text("Call me on 201 555 0199 or +1 (201) 555-0123, ada@example.org."),
            "Call me on [phone] or [phone], [email]."
        );
        assert_eq!(
            r.text("Booking KTH472 on 2026-12-12 at 10:30, room 12."),
            "Booking KTH472 on 2026-12-12 at 10:30, room 12."
        );
        assert_eq!(r.text("+12015550199"), "[phone]");
    }

    #[test]
    fn the_names_the_tools_handled_go_everywhere_and_other_words_stay() {
        let calls = json!([
            {"name": "book_appointment",
             "arguments": {"patient_name": "Ada Lovelace", "phone": "+12015550123"},
             "result": {"booking_id": "MNP358", "name": "Ada Lovelace"}},
            // arguments as the model's raw JSON text
            {"name": "find_bookings", "arguments": "{\"name\": \"Grace Hopper\"}", "result": null}
        ]);
        let r = Redactor::for_call(&calls);
        assert_eq!(
            r.text("Thank you ADA, I booked Ada Lovelace; grace hopper's adage stays."),
            "Thank you [name], I booked [name] [name]; [name] [name]'s adage stays."
        );
        // the tool's own name is not a person's
        assert_eq!(r.text("book_appointment"), "book_appointment");
    }

    #[test]
    fn a_record_keeps_its_shape_ids_and_times() {
        let mut calls = json!([
            {"call_id": "call_8472919", "name": "book_appointment", "at_ms": 5200,
             "arguments": {"patient_name": "Ada Lovelace", "phone": "+12015550123"},
             "result": {"booking_id": "MNP358", "date": "2026-12-12"}}
        ]);
        let mut transcript = json!([
            {"role": "caller", "item_id": "item_5550123456", "at_ms": 1000,
             "text": "This is Ada, my number is 201-555-0123."},
            {"role": "agent", "item_id": "item_2", "at_ms": 3000, "text": "Booked, Ada."}
        ]);
        let r = Redactor::for_call(&calls);
        r.record(&mut transcript, &mut calls);
        assert_eq!(
            transcript[0]["text"],
            "This is [name], my number is [phone]."
        );
        assert_eq!(transcript[0]["item_id"], "item_5550123456");
        assert_eq!(transcript[1]["text"], "Booked, [name].");
        assert_eq!(calls[0]["call_id"], "call_8472919");
        assert_eq!(calls[0]["name"], "book_appointment");
        assert_eq!(calls[0]["arguments"]["patient_name"], "[name] [name]");
        assert_eq!(calls[0]["arguments"]["phone"], "[phone]");
        assert_eq!(calls[0]["result"]["booking_id"], "MNP358");
        assert_eq!(calls[0]["result"]["date"], "2026-12-12");
    }
}

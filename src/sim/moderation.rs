//! The simulated moderation endpoint (`POST /v1/moderations`): a fixed word list stands in
//! for the classifier, and the answer has OpenAI's shape.

use serde_json::{json, Map, Value};

use super::state::random_id;

/// Input containing any of these (in any case) is flagged as `harassment`; the list is
/// documented in `config/scenarios/README.md`.
pub const FLAGGED_WORDS: &[&str] = &["forbidden-test-word", "flagged-test-phrase"];

/// The category the word list flags.
pub const FLAGGED_CATEGORY: &str = "harassment";

/// The categories `omni-moderation-latest` reports.
const CATEGORIES: &[&str] = &[
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// True when `text` holds a word of [`FLAGGED_WORDS`].
pub fn is_flagged(text: &str) -> bool {
    let lower = text.to_lowercase();
    FLAGGED_WORDS.iter().any(|w| lower.contains(w))
}

/// The answer for `inputs` (one result each, in order): `{"id","model","results":[…]}`.
pub fn answer(model: &str, inputs: &[&str]) -> Value {
    let results: Vec<Value> = inputs.iter().map(|text| result(is_flagged(text))).collect();
    // OpenAI writes these ids with a hyphen
    let id = random_id("modr", 24).replacen('_', "-", 1);
    json!({"id": id, "model": model, "results": results})
}

fn result(flagged: bool) -> Value {
    let mut categories = Map::new();
    let mut scores = Map::new();
    let mut applied = Map::new();
    for &c in CATEGORIES {
        let hit = flagged && c == FLAGGED_CATEGORY;
        categories.insert(c.into(), Value::Bool(hit));
        scores.insert(c.into(), json!(if hit { 0.93 } else { 0.000_01 }));
        applied.insert(c.into(), json!(["text"]));
    }
    json!({
        "flagged": flagged,
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_words_are_flagged() {
        let v = answer(
            "omni-moderation-latest",
            &["hello there", "a FORBIDDEN-TEST-WORD here"],
        );
        assert!(v["id"].as_str().unwrap().starts_with("modr-"));
        assert_eq!(v["results"][0]["flagged"], false);
        assert_eq!(v["results"][0]["categories"]["harassment"], false);
        assert_eq!(v["results"][1]["flagged"], true);
        assert_eq!(v["results"][1]["categories"]["harassment"], true);
        assert_eq!(v["results"][1]["categories"]["hate"], false);
        assert_eq!(
            v["results"][1]["category_applied_input_types"]["violence"][0],
            "text"
        );
    }
}

//! Output guardrails: rules checked on the agent's transcript as it grows.

use std::fmt;
use std::sync::Arc;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

/// One rule as an agent file writes it (`[[guardrails]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The rule's name, for logs, events and metrics.
    pub name: String,
    /// Regular expressions; any match trips the rule.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Words or phrases; any of them as whole words, in any case, trips the rule.
    #[serde(default)]
    pub words: Vec<String>,
    /// What the model is told when the rule trips (a default names the rule).
    #[serde(default)]
    pub message: Option<String>,
}

/// How many new characters a [`TranscriptWatch`] lets arrive between two checks by default
/// (what the Agents SDK does).
pub const DEFAULT_EVERY: usize = 100;
/// Bytes of already checked text that a check looks at again, so a word or phrase split
/// across two checks is still found (longer word-list phrases widen it, see
/// [`Guardrails::overlap`]).
const BASE_OVERLAP: usize = 64;
/// A trailing run of letters longer than this is not held back as an unfinished word (a
/// transcript without spaces must still be checked as it grows).
const MAX_HELD_WORD: usize = 64;
/// Largest compiled size of one rule's regex, so a huge pattern is a config error rather
/// than a memory spike.
const REGEX_SIZE_LIMIT: usize = 2 * 1024 * 1024;

/// A rule that tripped: which one, on what text, and what to tell the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trip {
    /// The rule's name.
    pub rule: String,
    /// The text that matched. It may be the very thing the rule guards against (a card
    /// number), so log the rule, not this.
    pub matched: String,
    /// What to tell the model: the rule's `message`, or a default naming the rule.
    pub message: String,
}

/// Why a set of rules could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardrailError {
    /// A pattern is not a valid regular expression (or compiles too large).
    #[error(
        "guardrail {rule:?}: the pattern {pattern:?} is not a valid regular expression: {message}"
    )]
    BadPattern {
        /// The rule's name.
        rule: String,
        /// The pattern as written.
        pattern: String,
        /// The regex crate's explanation.
        message: String,
    },
    /// The rule has nothing to match: no patterns and no words, or a blank one (a word needs
    /// at least one letter or digit).
    #[error("guardrail {rule:?} has an empty pattern or word, or none at all")]
    Empty {
        /// The rule's name.
        rule: String,
    },
}

/// One compiled rule.
#[derive(Debug)]
struct Rule {
    name: String,
    message: String,
    /// Each pattern, case-insensitive; then the word list as one regex.
    regexes: Vec<Regex>,
}

/// Compiled guardrail rules. Cheap to clone (the rules are shared).
///
/// Patterns are regular expressions (the `regex` crate's syntax), matched case-insensitively
/// unless a pattern turns that off with `(?-i)`. Words and phrases match whole words only,
/// in any case, with any run of spaces or punctuation between a phrase's words: `"credit
/// card"` matches `"Credit-card"` and `"credit,  card"`, and `"ass"` does not match `"pass"`.
/// Only the letters and digits of a word-list entry count: its punctuation is a separator
/// like a space (`"c++"` is the word `"c"`), so write symbols as patterns.
#[derive(Debug, Clone, Default)]
pub struct Guardrails {
    rules: Arc<[Rule]>,
    overlap: usize,
}

impl Guardrails {
    /// Compiles `rules`; the first bad pattern or empty rule is the error.
    pub fn new(rules: &[RuleConfig]) -> Result<Self, GuardrailError> {
        let mut compiled = Vec::with_capacity(rules.len());
        let mut longest_word = 0;
        for rule in rules {
            let empty = || GuardrailError::Empty {
                rule: rule.name.clone(),
            };
            if rule.patterns.is_empty() && rule.words.is_empty() {
                return Err(empty());
            }
            let mut regexes = Vec::with_capacity(rule.patterns.len() + 1);
            for pattern in &rule.patterns {
                if pattern.trim().is_empty() {
                    return Err(empty());
                }
                regexes.push(compile(pattern).map_err(|e| GuardrailError::BadPattern {
                    rule: rule.name.clone(),
                    pattern: pattern.clone(),
                    message: e.to_string(),
                })?);
            }
            if !rule.words.is_empty() {
                let mut alternatives = Vec::with_capacity(rule.words.len());
                for word in &rule.words {
                    let tokens: Vec<String> = word
                        .split(|c: char| !is_word_char(c))
                        .filter(|t| !t.is_empty())
                        .map(regex::escape)
                        .collect();
                    if tokens.is_empty() {
                        return Err(empty());
                    }
                    longest_word = longest_word.max(word.len());
                    alternatives.push(tokens.join(r"\W+"));
                }
                let source = format!(r"\b(?:{})\b", alternatives.join("|"));
                regexes.push(compile(&source).map_err(|e| GuardrailError::BadPattern {
                    rule: rule.name.clone(),
                    pattern: rule.words.join(", "),
                    message: e.to_string(),
                })?);
            }
            compiled.push(Rule {
                name: rule.name.clone(),
                message: rule
                    .message
                    .clone()
                    .unwrap_or_else(|| default_message(&rule.name)),
                regexes,
            });
        }
        Ok(Self {
            rules: compiled.into(),
            // a phrase may be written with more spaces or punctuation than in the list
            overlap: BASE_OVERLAP + 2 * longest_word,
        })
    }

    /// No rules: nothing ever trips.
    pub fn none() -> Self {
        Self::default()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Bytes of checked text a [`TranscriptWatch`] looks at again at each check. A pattern
    /// match longer than this that straddles two checks can be missed while the transcript
    /// grows; word-list phrases are always covered.
    pub fn overlap(&self) -> usize {
        self.overlap
    }

    /// The first rule (in configuration order) that matches anywhere in `text`.
    pub fn check(&self, text: &str) -> Option<Trip> {
        self.check_from(text, 0)
    }

    /// The first rule matching `text` from byte `start` on; the text before `start` still
    /// decides word boundaries, so `"ass"` is not found at `start` inside `"pass"`.
    fn check_from(&self, text: &str, start: usize) -> Option<Trip> {
        self.rules.iter().find_map(|rule| {
            rule.regexes.iter().find_map(|re| {
                re.find_at(text, start).map(|m| Trip {
                    rule: rule.name.clone(),
                    matched: m.as_str().to_string(),
                    message: rule.message.clone(),
                })
            })
        })
    }
}

fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// What the model is told when a rule without its own message trips.
fn default_message(rule: &str) -> String {
    format!(
        "Your last answer was blocked by the \"{rule}\" guardrail and the caller did not hear \
         it. Answer again without that content."
    )
}

/// Letters, digits and `_`: what the regex crate's `\w` and `\b` treat as word characters
/// (closely enough for splitting word-list entries and holding back unfinished words).
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Follows one response's growing transcript and checks it against [`Guardrails`].
///
/// A check runs when at least `every` characters arrived since the last one, and at
/// [`TranscriptWatch::done`]. Each check reads only the text not checked yet plus a short
/// overlap of checked text (so a phrase split across two checks is found), which keeps the
/// work linear in the transcript's length. A trailing unfinished word is left for the next
/// check, so `"ass"` does not trip on the first half of `"assign"`.
///
/// After a trip the watch stays quiet until [`TranscriptWatch::reset`]: the response is
/// being cancelled and one trip is enough.
#[derive(Debug, Clone)]
pub struct TranscriptWatch {
    every: usize,
    text: String,
    /// Bytes of `text` already checked; always at a word boundary or the end.
    checked: usize,
    /// Characters after `checked`.
    pending: usize,
    tripped: bool,
    checks: u64,
    scanned: u64,
}

impl Default for TranscriptWatch {
    fn default() -> Self {
        Self::new(DEFAULT_EVERY)
    }
}

impl TranscriptWatch {
    /// A watch that checks every `every` new characters (at least 1).
    pub fn new(every: usize) -> Self {
        Self {
            every: every.max(1),
            text: String::new(),
            checked: 0,
            pending: 0,
            tripped: false,
            checks: 0,
            scanned: 0,
        }
    }

    /// Adds a transcript delta; checks when enough new text arrived.
    pub fn push(&mut self, g: &Guardrails, delta: &str) -> Option<Trip> {
        self.text.push_str(delta);
        self.pending += delta.chars().count();
        if self.tripped || g.is_empty() || self.pending < self.every {
            return None;
        }
        let end = self.word_end();
        if end <= self.checked {
            return None;
        }
        self.check_to(g, end)
    }

    /// The response is done: checks whatever is left unchecked.
    pub fn done(&mut self, g: &Guardrails) -> Option<Trip> {
        if self.tripped || g.is_empty() || self.checked >= self.text.len() {
            return None;
        }
        self.check_to(g, self.text.len())
    }

    /// Starts over for a new response (keeps the counters).
    pub fn reset(&mut self) {
        self.text.clear();
        self.checked = 0;
        self.pending = 0;
        self.tripped = false;
    }

    /// The transcript so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Checks run since the watch was made (for metrics and tests).
    pub fn checks(&self) -> u64 {
        self.checks
    }

    /// Bytes of transcript those checks read, overlap included (for metrics and tests).
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// The end of the text minus a trailing unfinished word (unless that run is too long to
    /// be one word).
    fn word_end(&self) -> usize {
        let tail_from = floor_boundary(&self.text, self.text.len().saturating_sub(MAX_HELD_WORD));
        match self.text[tail_from..].rfind(|c: char| !is_word_char(c)) {
            Some(i) => {
                let c = self.text[tail_from + i..]
                    .chars()
                    .next()
                    .map_or(1, char::len_utf8);
                tail_from + i + c
            }
            None if tail_from == 0 => 0,
            None => self.text.len(),
        }
    }

    fn check_to(&mut self, g: &Guardrails, end: usize) -> Option<Trip> {
        let start = floor_boundary(&self.text, self.checked.saturating_sub(g.overlap()));
        self.checks += 1;
        self.scanned += (end - start) as u64;
        let trip = g.check_from(&self.text[..end], start);
        self.checked = end;
        self.pending = self.text[end..].chars().count();
        self.tripped = trip.is_some();
        trip
    }
}

/// The largest char boundary of `s` at or below `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Trip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // never the matched text: it may be what the rule protects
        write!(f, "guardrail {:?} tripped", self.rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, patterns: &[&str], words: &[&str]) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
            words: words.iter().map(|w| w.to_string()).collect(),
            message: None,
        }
    }

    fn rules(list: &[RuleConfig]) -> Guardrails {
        Guardrails::new(list).unwrap()
    }

    const FILLER: &str = "Thank you for calling the clinic, we are open on weekdays from nine to five and happy to help. ";

    #[test]
    fn patterns_match_case_insensitively_and_name_the_rule() {
        let g = rules(&[
            rule("card", &[r"\b(?:\d{4}[ -]?){3}\d{4}\b"], &[]),
            rule("code", &["secret code"], &[]),
        ]);
        let trip = g
            .check("Your number is 4111 1111 1111 1111, right?")
            .unwrap();
        assert_eq!(trip.rule, "card");
        assert_eq!(trip.matched, "4111 1111 1111 1111");
        assert!(trip.message.contains("\"card\""), "{}", trip.message);
        assert_eq!(g.check("The SECRET Code is 42").unwrap().rule, "code");
        assert_eq!(g.check("We open at 9 and close at 5."), None);
        // Display never shows the matched text
        assert!(!trip.to_string().contains("4111"));
    }

    #[test]
    fn a_rules_own_message_is_what_the_model_is_told() {
        let mut r = rule("prices", &[], &["discount"]);
        r.message = Some("Do not promise discounts.".into());
        let trip = rules(&[r]).check("a big Discount!").unwrap();
        assert_eq!(trip.message, "Do not promise discounts.");
        assert_eq!(trip.matched, "Discount");
    }

    #[test]
    fn words_match_whole_words_only() {
        let g = rules(&[rule("rude", &[], &["ass", "idiot"])]);
        for clean in [
            "Please pass the form",
            "passing through",
            "a class act",
            "assign it",
            "idiotic",
            "the_ass_variable",
        ] {
            assert_eq!(g.check(clean), None, "{clean}");
        }
        for rude in ["you ass.", "ASS!", "(ass)", "what an Idiot", "idiot,ass"] {
            assert_eq!(g.check(rude).map(|t| t.rule), Some("rude".into()), "{rude}");
        }
    }

    #[test]
    fn phrases_tolerate_punctuation_and_repeated_whitespace() {
        let g = rules(&[rule("card", &[], &["credit card number"])]);
        for hit in [
            "your credit card number",
            "Credit-Card Number?",
            "credit,   card\n number",
            "credit card... number",
        ] {
            assert!(g.check(hit).is_some(), "{hit}");
        }
        for miss in [
            "credit cards number",
            "credit number",
            "discredit card number",
        ] {
            assert_eq!(g.check(miss), None, "{miss}");
        }
    }

    #[test]
    fn a_bad_pattern_is_an_error_naming_the_rule_and_the_pattern() {
        let err = Guardrails::new(&[
            rule("fine", &["ok"], &[]),
            rule("broken", &["ok", "(unclosed"], &[]),
        ])
        .unwrap_err();
        match &err {
            GuardrailError::BadPattern {
                rule,
                pattern,
                message,
            } => {
                assert_eq!(rule, "broken");
                assert_eq!(pattern, "(unclosed");
                assert!(!message.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let shown = err.to_string();
        assert!(
            shown.contains("broken") && shown.contains("(unclosed"),
            "{shown}"
        );
    }

    #[test]
    fn a_rule_with_nothing_to_match_is_an_error() {
        for bad in [
            rule("nothing", &[], &[]),
            rule("blank", &[" "], &[]),
            rule("punct", &[], &["ok", " ,.! "]),
        ] {
            let name = bad.name.clone();
            assert_eq!(
                Guardrails::new(&[bad]).unwrap_err(),
                GuardrailError::Empty { rule: name }
            );
        }
    }

    #[test]
    fn no_rules_never_trip() {
        let g = Guardrails::none();
        assert!(g.is_empty());
        assert_eq!(g.check("anything at all"), None);
        let mut w = TranscriptWatch::new(10);
        assert_eq!(w.push(&g, &FILLER.repeat(3)), None);
        assert_eq!(w.done(&g), None);
        assert_eq!(w.checks(), 0);
        assert_eq!(w.text(), FILLER.repeat(3));
        assert!(!rules(&[rule("r", &["x"], &[])]).is_empty());
    }

    /// Feeds `text` split at the given byte positions, then `done`; returns every trip.
    fn feed(g: &Guardrails, every: usize, text: &str, cuts: &[usize]) -> Vec<Trip> {
        let mut w = TranscriptWatch::new(every);
        let mut trips = vec![];
        let mut at = 0;
        for &cut in cuts.iter().chain([text.len()].iter()) {
            trips.extend(w.push(g, &text[at..cut]));
            at = cut;
        }
        trips.extend(w.done(g));
        assert_eq!(w.text(), text);
        trips
    }

    #[test]
    fn a_phrase_split_across_deltas_at_every_position_is_found_once() {
        let g = rules(&[rule("card", &[], &["credit card number"])]);
        let text = format!(
            "{FILLER}{FILLER}Could you read me your Credit card  number, please? Café ☕ {FILLER}"
        );
        let cuts: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for every in [1, 7, 100] {
            // one cut anywhere
            for &cut in &cuts {
                let trips = feed(&g, every, &text, &[cut]);
                assert_eq!(trips.len(), 1, "every {every}, cut at {cut}");
                assert_eq!(trips[0].matched, "Credit card  number");
            }
            // small deltas, every phase
            for phase in 1..20 {
                let pos: Vec<usize> = cuts.iter().copied().filter(|&c| c % 20 == phase).collect();
                assert_eq!(
                    feed(&g, every, &text, &pos).len(),
                    1,
                    "every {every}, phase {phase}"
                );
            }
        }
    }

    #[test]
    fn a_word_split_inside_a_longer_word_never_trips() {
        let g = rules(&[rule("rude", &[], &["ass"])]);
        let text = format!("{FILLER}{FILLER}You can pass the assignment in class. {FILLER}");
        for cut in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            for every in [1, 5, 100] {
                assert!(
                    feed(&g, every, &text, &[cut]).is_empty(),
                    "every {every}, cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn checks_come_every_100_new_characters_and_at_done() {
        let g = rules(&[rule("rude", &[], &["idiot"])]);
        let mut w = TranscriptWatch::new(DEFAULT_EVERY);
        // 99 characters, the word among them: not checked yet
        let first = format!("{} idiot ", "a".repeat(92));
        assert_eq!(first.chars().count(), 99);
        assert_eq!(w.push(&g, &first), None);
        assert_eq!(w.checks(), 0);
        // the 100th character brings the check
        assert_eq!(w.push(&g, "x").map(|t| t.rule), Some("rude".into()));
        assert_eq!(w.checks(), 1);
        // tripped: quiet until reset
        assert_eq!(w.push(&g, &"idiot ".repeat(40)), None);
        assert_eq!(w.done(&g), None);
        assert_eq!(w.checks(), 1);

        w.reset();
        assert_eq!(w.text(), "");
        assert_eq!(w.push(&g, "short and clean "), None);
        assert_eq!(w.checks(), 1);
        assert_eq!(w.done(&g), None);
        assert_eq!(w.checks(), 2);
        // nothing left unchecked: no second check
        assert_eq!(w.done(&g), None);
        assert_eq!(w.checks(), 2);

        w.reset();
        assert_eq!(w.push(&g, "you idiot"), None);
        assert_eq!(w.done(&g).map(|t| t.matched), Some("idiot".into()));
    }

    #[test]
    fn multibyte_characters_count_as_one() {
        let g = rules(&[rule("r", &[], &["zzz"])]);
        let mut w = TranscriptWatch::new(10);
        assert_eq!(w.push(&g, "éééé ééé "), None);
        assert_eq!(w.checks(), 0);
        assert_eq!(w.push(&g, "é"), None);
        assert_eq!(w.checks(), 1);
    }

    #[test]
    fn a_long_transcript_costs_a_linear_amount_of_checking() {
        let g = rules(&[
            rule("card", &[r"\b(?:\d{4}[ -]?){3}\d{4}\b"], &[]),
            rule("rude", &[], &["idiot", "credit card number"]),
        ]);
        let text: String = FILLER.chars().cycle().take(10_000).collect();
        let mut w = TranscriptWatch::new(DEFAULT_EVERY);
        let mut chars = text.chars();
        loop {
            let delta: String = chars.by_ref().take(20).collect();
            if delta.is_empty() {
                break;
            }
            assert_eq!(w.push(&g, &delta), None);
        }
        assert_eq!(w.done(&g), None);
        // about one check per 100 characters, each reading its new text plus the overlap;
        // checking the whole transcript each time would read about 500 000
        assert!((95..=105).contains(&w.checks()), "{} checks", w.checks());
        let bound = 10_000 + w.checks() * g.overlap() as u64;
        assert!(w.scanned() >= 10_000, "{}", w.scanned());
        assert!(w.scanned() <= bound, "{} > {bound}", w.scanned());
        assert!(w.scanned() < 2 * 10_000, "{}", w.scanned());
    }

    #[test]
    fn guardrails_are_shared_not_copied() {
        let g = rules(&[rule("r", &["x"], &[])]);
        let h = g.clone();
        assert!(Arc::ptr_eq(&g.rules, &h.rules));
        assert!(format!("{g:?}").contains("\"r\""));
    }
}

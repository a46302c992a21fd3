//! Backchannel: the "uh-huh", "okay", "mm" a caller says while the agent talks, to show they
//! follow. The relay owns barge-in on phone calls (`bridge.barge_in_min_speech_ms`): speech
//! over the agent first pauses the agent's audio; speech that lasts the minimum interrupts;
//! shorter speech lets the agent go on, unless its transcript is more than backchannel words
//! (a short "no" or "wait" still interrupts). This module holds the settings and the word
//! check; the decisions are the call core's (`call_core::overlap`).

use std::sync::Arc;
use std::time::Duration;

/// The words and phrases taken for backchannel by default.
pub const DEFAULT_WORDS: &[&str] = &[
    "uh-huh",
    "uh huh",
    "mm-hmm",
    "mhm",
    "mm",
    "hmm",
    "mmm",
    "ok",
    "okay",
    "yeah",
    "yes",
    "yep",
    "right",
    "sure",
    "i see",
    "got it",
    "alright",
    "all right",
    "aha",
    "ah",
    "oh",
];

/// How the relay tells backchannel from an interruption.
#[derive(Debug, Clone, PartialEq)]
pub struct Backchannel {
    /// Speech over the agent this long interrupts it.
    pub min_speech: Duration,
    /// Shorter speech made only of these (normalised: lower case, letters, digits, spaces
    /// and hyphens) does not; longest first.
    words: Arc<[String]>,
    /// How long a short turn's transcript is waited for before it is taken for backchannel.
    pub transcript_wait: Duration,
}

impl Backchannel {
    /// Settings from the config's values.
    pub fn new(min_speech: Duration, words: &[String]) -> Self {
        let mut words: Vec<String> = words
            .iter()
            .map(|w| normalise(w))
            .filter(|w| !w.is_empty())
            .collect();
        words.sort_by_key(|w| std::cmp::Reverse(w.len()));
        words.dedup();
        Self {
            min_speech,
            words: words.into(),
            transcript_wait: Duration::from_secs(3),
        }
    }

    /// True when `transcript` says nothing but backchannel words (an empty one too: a noise).
    pub fn is_backchannel(&self, transcript: &str) -> bool {
        let mut rest = normalise(transcript);
        // remove whole-word occurrences of each phrase, longest first
        for w in self.words.iter() {
            rest = remove_phrase(&rest, w);
        }
        rest.trim().is_empty()
    }
}

/// Lower case; punctuation other than hyphens and apostrophes becomes a space; runs of
/// spaces become one.
fn normalise(s: &str) -> String {
    let mapped: String = s
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect();
    mapped.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` without the whole-word occurrences of `phrase`.
fn remove_phrase(text: &str, phrase: &str) -> String {
    let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
    let p: Vec<&str> = phrase.split(' ').collect();
    let mut out: Vec<&str> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        if words.len() - i >= p.len() && words[i..i + p.len()] == p[..] {
            i += p.len();
        } else {
            out.push(words[i]);
            i += 1;
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> Backchannel {
        let words: Vec<String> = DEFAULT_WORDS.iter().map(|s| s.to_string()).collect();
        Backchannel::new(Duration::from_millis(500), &words)
    }

    #[test]
    fn backchannel_words_in_any_case_and_punctuation_are_backchannel() {
        for t in [
            "uh-huh",
            "Uh-huh.",
            "OK",
            "okay, okay",
            "Mm-hmm!",
            "yeah right",
            "I see.",
            "All right",
            "",
            "  ...  ",
        ] {
            assert!(b().is_backchannel(t), "{t:?}");
        }
    }

    #[test]
    fn anything_more_is_an_interruption() {
        for t in [
            "No.",
            "wait",
            "stop",
            "okay but not Tuesday",
            "yes, book it for Friday",
            "what?",
            "uh-huh no",
        ] {
            assert!(!b().is_backchannel(t), "{t:?}");
        }
    }

    #[test]
    fn a_word_inside_another_is_not_removed() {
        // "ok" is not taken out of "okra", nor "ah" out of "ahead"
        assert!(!b().is_backchannel("okra"));
        assert!(!b().is_backchannel("ahead"));
    }

    #[test]
    fn the_list_is_configurable() {
        let custom = Backchannel::new(
            Duration::from_millis(300),
            &["Genau".into(), "ja ja".into()],
        );
        assert!(custom.is_backchannel("Ja ja, genau."));
        assert!(!custom.is_backchannel("okay"));
    }
}

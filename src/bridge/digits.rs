//! DTMF digit grouping: the caller's key presses become one text for the model per group,
//! ended by `#`, by a pause, or by length. IO-free: the time is passed in.

use std::time::Duration;

/// What the bridge waits after a key before sending the group.
pub const DEFAULT_INTER_DIGIT: Duration = Duration::from_millis(1_500);
/// A group is sent once it holds this many keys (nobody types more on a phone keypad).
pub const MAX_DIGITS: usize = 32;
/// The key that ends a group at once (and is part of it).
pub const END_KEY: char = '#';

/// Groups key presses. Keys are `0`-`9`, `*`, `#` and `A`-`D` (lower case `a`-`d` are taken
/// as upper case); anything else, such as a flash, is ignored.
///
/// A group ends when `#` is pressed (the `#` is part of it), when it reaches
/// [`MAX_DIGITS`] keys, or when `inter_digit` passes after its last key. The call task feeds
/// keys to [`DigitGrouper::push`] and calls [`DigitGrouper::poll`] at
/// [`DigitGrouper::deadline`].
#[derive(Debug, Clone)]
pub struct DigitGrouper {
    inter_digit: Duration,
    group: String,
    last_key: Duration,
    /// A finished group not handed out yet (when one `push` finished two).
    ready: Option<(String, Duration)>,
}

impl DigitGrouper {
    /// A grouper that ends a group `inter_digit` after its last key.
    pub fn new(inter_digit: Duration) -> Self {
        Self {
            inter_digit,
            group: String::with_capacity(MAX_DIGITS),
            last_key: Duration::ZERO,
            ready: None,
        }
    }

    /// A key pressed at `now`; returns a group when one is finished.
    ///
    /// If the pending group's pause ran out before this key (the task was late to poll),
    /// that group is returned and the key starts a new one; should the key also finish its
    /// own group (`#`), that one waits for the next `poll`.
    pub fn push(&mut self, now: Duration, key: char) -> Option<String> {
        let key = match key {
            '0'..='9' | '*' | '#' | 'A'..='D' => key,
            'a'..='d' => key.to_ascii_uppercase(),
            _ => return None,
        };
        let expired = self.take_expired(now);
        self.group.push(key);
        self.last_key = now;
        let finished = (key == END_KEY || self.group.len() >= MAX_DIGITS)
            .then(|| std::mem::take(&mut self.group));
        match (expired, finished) {
            (Some(old), Some(new)) => {
                self.ready = Some((new, now));
                Some(old)
            }
            (old, new) => old.or(new),
        }
    }

    /// The group whose pause has run out by `now`, if any.
    pub fn poll(&mut self, now: Duration) -> Option<String> {
        if let Some((group, _)) = self.ready.take() {
            return Some(group);
        }
        self.take_expired(now)
    }

    /// When [`DigitGrouper::poll`] should be called next (`None`: no keys pending). It may
    /// be in the past: then poll at once.
    pub fn deadline(&self) -> Option<Duration> {
        if let Some((_, at)) = &self.ready {
            return Some(*at);
        }
        (!self.group.is_empty()).then(|| self.last_key + self.inter_digit)
    }

    /// True when no keys are waiting.
    pub fn is_empty(&self) -> bool {
        self.group.is_empty() && self.ready.is_none()
    }

    fn take_expired(&mut self, now: Duration) -> Option<String> {
        let due = !self.group.is_empty() && now >= self.last_key + self.inter_digit;
        due.then(|| std::mem::take(&mut self.group))
    }
}

impl Default for DigitGrouper {
    fn default() -> Self {
        Self::new(DEFAULT_INTER_DIGIT)
    }
}

/// The prefix of a keypad text item.
pub const KEYPAD_PREFIX: &str = "[keypad]";

/// The user text item the model receives for a group of keys: `[keypad] ` followed by the
/// keys as pressed, e.g. `[keypad] 1`, `[keypad] 4412#`. The prefix tells the model (and an
/// agent's instructions) that the caller pressed keys rather than spoke.
pub fn keypad_text(digits: &str) -> String {
    format!("{KEYPAD_PREFIX} {digits}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn keys_are_grouped_until_a_pause() {
        let mut g = DigitGrouper::new(ms(1_500));
        assert_eq!(g.deadline(), None);
        assert_eq!(g.push(ms(0), '1'), None);
        assert_eq!(g.deadline(), Some(ms(1_500)));
        assert_eq!(g.push(ms(800), '2'), None);
        assert_eq!(g.push(ms(2_000), '3'), None);
        assert_eq!(g.deadline(), Some(ms(3_500)));
        assert_eq!(g.poll(ms(3_499)), None);
        assert_eq!(g.poll(ms(3_500)).as_deref(), Some("123"));
        assert_eq!(g.deadline(), None);
        assert_eq!(g.poll(ms(10_000)), None);
        assert!(g.is_empty());
    }

    #[test]
    fn hash_ends_the_group_at_once_and_is_part_of_it() {
        let mut g = DigitGrouper::new(ms(1_500));
        assert_eq!(g.push(ms(0), '4'), None);
        assert_eq!(g.push(ms(100), '2'), None);
        assert_eq!(g.push(ms(200), '#').as_deref(), Some("42#"));
        assert_eq!(g.deadline(), None);
        assert_eq!(g.push(ms(300), '#').as_deref(), Some("#"));
    }

    #[test]
    fn a_long_group_is_sent_at_32_keys() {
        let mut g = DigitGrouper::new(ms(1_500));
        for i in 0..31u32 {
            assert_eq!(g.push(i * ms(10), '7'), None);
        }
        assert_eq!(g.push(ms(310), '8'), Some(format!("{}8", "7".repeat(31))));
        assert!(g.is_empty());
        assert_eq!(g.push(ms(320), '9'), None);
        assert_eq!(g.poll(ms(1_820)).as_deref(), Some("9"));
    }

    #[test]
    fn other_keys_are_normalised_or_ignored() {
        let mut g = DigitGrouper::new(ms(1_500));
        assert_eq!(g.push(ms(0), '!'), None);
        assert_eq!(g.push(ms(0), 'x'), None);
        assert!(g.is_empty());
        g.push(ms(0), '*');
        g.push(ms(10), 'a');
        g.push(ms(20), 'D');
        assert_eq!(g.poll(ms(1_520)).as_deref(), Some("*AD"));
    }

    #[test]
    fn a_late_poll_does_not_merge_two_groups() {
        let mut g = DigitGrouper::new(ms(1_500));
        g.push(ms(0), '1');
        // nobody polled at 1.5 s; the next key still starts a new group
        assert_eq!(g.push(ms(5_000), '2').as_deref(), Some("1"));
        assert_eq!(g.deadline(), Some(ms(6_500)));
        g.push(ms(5_500), '3');
        // the late key finished a group too: it waits for the next poll, due now
        assert_eq!(g.push(ms(9_000), '#').as_deref(), Some("23"));
        assert_eq!(g.deadline(), Some(ms(9_000)));
        assert_eq!(g.poll(ms(9_000)).as_deref(), Some("#"));
        assert!(g.is_empty());
    }

    #[test]
    fn the_model_sees_a_keypad_item() {
        assert_eq!(keypad_text("1"), "[keypad] 1");
        assert_eq!(keypad_text("4412#"), "[keypad] 4412#");
    }
}

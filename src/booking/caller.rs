//! Who is on the line, as far as the booking tools may rely on it.
//!
//! A caller's number counts only when a trusted trunk asserted it (`src/sip/caller_id.rs`):
//! then look-ups and cancellations are scoped to that number. Anything a caller *says* is
//! just a claim: without an asserted number the tools never give out names or booking ids,
//! and cancelling needs both the booking id and the number it was booked with.

use phonenumber::country::Id as Region;

use super::phone;

/// The caller of one call, as the booking tools see them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Caller {
    /// The number a trusted trunk asserted, in E.164 form.
    Verified(String),
    /// No trustworthy number (no trunk, an untrusted trunk, or no number in the headers).
    #[default]
    Unverified,
}

impl Caller {
    /// The caller of a call whose trunk asserted `number` (as written in the SIP headers;
    /// numbers without a country code are taken as `region`'s). A number that does not parse
    /// gives [`Caller::Unverified`].
    pub fn from_asserted(number: Option<&str>, region: Region) -> Self {
        match number.map(|n| phone::normalize(n, region)) {
            Some(Ok(e164)) => Caller::Verified(e164),
            _ => Caller::Unverified,
        }
    }

    /// The verified number, if there is one.
    pub fn number(&self) -> Option<&str> {
        match self {
            Caller::Verified(n) => Some(n),
            Caller::Unverified => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asserted_numbers_are_normalised_and_rubbish_is_unverified() {
        let us = phone::parse_region("US").unwrap();
        assert_eq!(
            Caller::from_asserted(Some("2015550123"), us),
            Caller::Verified("+12015550123".into())
        );
        assert_eq!(
            Caller::from_asserted(Some("+442079460018"), us).number(),
            Some("+442079460018")
        );
        for bad in [
            None,
            Some(""),
            Some("12"),
            Some("+999 1"),
            Some("anonymous"),
        ] {
            assert_eq!(
                Caller::from_asserted(bad, us),
                Caller::Unverified,
                "{bad:?}"
            );
        }
    }
}

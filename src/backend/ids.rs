//! What the SQL backends' holding ids (`postgres://…`, `mssql://…`) share: names inside an id
//! are percent-encoded so the id survives lower-casing (the ledger keeps ids lower-cased) and
//! a name cannot be confused with the id's own `/`, `#` and `%`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Everything but lower-case letters, digits, `_` and `-`.
const ENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'-')
    .add(b'A')
    .add(b'B')
    .add(b'C')
    .add(b'D')
    .add(b'E')
    .add(b'F')
    .add(b'G')
    .add(b'H')
    .add(b'I')
    .add(b'J')
    .add(b'K')
    .add(b'L')
    .add(b'M')
    .add(b'N')
    .add(b'O')
    .add(b'P')
    .add(b'Q')
    .add(b'R')
    .add(b'S')
    .add(b'T')
    .add(b'U')
    .add(b'V')
    .add(b'W')
    .add(b'X')
    .add(b'Y')
    .add(b'Z');

/// `name` with every byte but lower-case letters, digits, `_` and `-` percent-encoded, in
/// lower-case hex (so the encoding is already what lower-casing the id would make of it).
pub(crate) fn encode(name: &str) -> String {
    utf8_percent_encode(name, ENCODED)
        .to_string()
        .to_ascii_lowercase()
}

/// The name `encode` made, if `encoded` decodes to UTF-8. Callers re-encode and compare, so
/// only the canonical spelling is ever accepted.
pub(crate) fn decode(encoded: &str) -> Option<String> {
    percent_decode_str(encoded)
        .decode_utf8()
        .ok()
        .map(|name| name.into_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_encode_to_lower_case_and_keep_the_safe_characters() {
        assert_eq!(encode("Orders"), "%4frders");
        assert_eq!(encode("a_b-c9"), "a_b-c9");
        assert_eq!(encode("x/y#z%"), "x%2fy%23z%25");
        assert_eq!(encode("é"), "%c3%a9");
    }

    proptest! {
        #[test]
        fn every_name_round_trips_and_survives_lower_casing(name in any::<String>()) {
            let encoded = encode(&name);
            prop_assert_eq!(&encoded, &encoded.to_ascii_lowercase());
            prop_assert_eq!(decode(&encoded), Some(name));
        }
    }
}

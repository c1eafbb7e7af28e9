//! Cutting text to a byte limit without splitting a character: close
//! reasons and ERROR messages have byte limits, and the text in them is
//! UTF-8.

/// The longest prefix of `s` that is at most `max` bytes and ends on a
/// character boundary (all of `s` when it fits).
pub fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    // Index 0 is always a boundary, so this stops.
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.split_at(cut).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_fits_is_kept_whole() {
        assert_eq!(prefix("abc", 3), "abc");
        assert_eq!(prefix("abc", 10), "abc");
        assert_eq!(prefix("", 0), "");
    }

    #[test]
    fn cuts_fall_before_a_split_character() {
        // 'é' is two bytes, '€' three.
        assert_eq!(prefix("aé", 2), "a");
        assert_eq!(prefix("aé", 3), "aé");
        assert_eq!(prefix("€€", 5), "€");
        assert_eq!(prefix("€", 2), "");
        assert_eq!(prefix("abc", 0), "");
    }

    proptest::proptest! {
        #[test]
        fn the_prefix_is_the_longest_that_fits(s in ".{0,24}", max in 0usize..40) {
            let p = prefix(&s, max);
            proptest::prop_assert!(p.len() <= max);
            proptest::prop_assert!(s.starts_with(p));
            // One more character would not fit (or there is none).
            if let Some(c) = s[p.len()..].chars().next() {
                proptest::prop_assert!(p.len() + c.len_utf8() > max);
            }
        }
    }
}

//! Session names: the validation rule for requested names and the generator
//! for random ones (`wandering-otter-42`).

use crate::rng::SeededRng;

/// Whether `name` matches `^[a-z0-9][a-z0-9-]{1,28}[a-z0-9]$`.
///
/// Checked by hand so the harness needs no regex engine: 3 to 30 bytes, lower
/// case ASCII letters, digits and hyphens, alphanumeric at both ends.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match bytes {
        [first, middle @ .., last] if (3..=30).contains(&bytes.len()) => {
            alnum(*first) && alnum(*last) && middle.iter().all(|&b| alnum(b) || b == b'-')
        }
        _ => false,
    }
}

const ADJECTIVES: &[&str] = &[
    "wandering",
    "quiet",
    "brave",
    "amber",
    "misty",
    "lucky",
    "rapid",
    "gentle",
    "hollow",
    "silver",
    "sleepy",
    "crimson",
    "frosty",
    "golden",
    "humble",
    "jolly",
    "nimble",
    "patient",
    "rustic",
    "sunny",
    "tidy",
    "velvet",
    "witty",
    "zesty",
];

const ANIMALS: &[&str] = &[
    "otter", "heron", "badger", "lynx", "falcon", "marten", "newt", "puffin", "raven", "stoat",
    "tapir", "walrus", "yak", "beaver", "crane", "dingo", "gecko", "ibis", "koala", "lemur",
    "moose", "ocelot", "quokka", "wombat",
];

/// Deterministic generator of random-looking names, seeded so a test run can
/// be repeated name for name.
#[derive(Debug, Clone)]
pub struct NameGen {
    rng: SeededRng,
}

impl NameGen {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        NameGen {
            rng: SeededRng::new(seed),
        }
    }

    fn pick(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }

    /// The next name, `adjective-animal-N` with N in 1..=99; always valid
    /// under [`is_valid_name`]. Callers check it against names in use.
    pub fn next_name(&mut self) -> String {
        let adjective = ADJECTIVES[self.pick(ADJECTIVES.len())];
        let animal = ANIMALS[self.pick(ANIMALS.len())];
        let number = self.pick(99) + 1;
        format!("{adjective}-{animal}-{number}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_follows_the_naming_rule() {
        for good in [
            "acme-staging",
            "paul-webhooks",
            "client-preview-2026",
            "api-v3",
            "abc",
            "a-1",
        ] {
            assert!(is_valid_name(good), "{good}");
        }
        let thirty = "a".repeat(30);
        assert!(is_valid_name(&thirty));
        let too_long = "a".repeat(31);
        let bad = [
            "Acme-Staging",
            "_internal",
            "-edge",
            "edge-",
            "ab",
            "",
            "a",
            too_long.as_str(),
            "dot.name",
            "naïve",
            "under_score",
            "space name",
        ];
        for b in bad {
            assert!(!is_valid_name(b), "{b}");
        }
    }

    #[test]
    fn generated_names_are_valid_and_seeded() {
        let mut a = NameGen::new(42);
        let mut b = NameGen::new(42);
        for _ in 0..500 {
            let n = a.next_name();
            assert!(is_valid_name(&n), "{n}");
            assert_eq!(n, b.next_name());
            assert_eq!(n.split('-').count(), 3);
        }
        assert_ne!(NameGen::new(1).next_name(), NameGen::new(2).next_name());
    }
}

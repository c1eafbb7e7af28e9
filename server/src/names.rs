//! Session names: the rule for requested names and a seeded generator for
//! the ones the server picks (`wandering-otter-42`).

/// Whether `name` matches `^[a-z0-9][a-z0-9-]{1,28}[a-z0-9]$` (PROTOCOL.md
/// 8.2): 3 to 30 bytes of lower-case ASCII letters, digits and inner
/// hyphens, usable as a DNS label.
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

/// A SplitMix64 generator: the same seed gives the same numbers on every
/// platform, so a test run can be repeated name for name.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Generator of random-looking valid names, seeded.
#[derive(Debug, Clone)]
pub struct NameGen {
    rng: SplitMix,
}

impl NameGen {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        NameGen {
            rng: SplitMix::new(seed),
        }
    }

    fn pick(&mut self, n: usize) -> usize {
        usize::try_from(self.rng.below(n as u64)).unwrap_or(0)
    }

    /// The next name, `adjective-animal-N` with N in 1..=99; always valid
    /// under [`is_valid_name`]. The store decides whether it is free.
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
        for good in ["acme-staging", "api-v3", "abc", "a-1", &"a".repeat(30)] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in [
            "Acme",
            "_x1",
            "-edge",
            "edge-",
            "ab",
            "",
            "a",
            &"a".repeat(31),
            "dot.name",
            "naïve",
            "under_score",
            "sp ace",
        ] {
            assert!(!is_valid_name(bad), "{bad}");
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
        }
        assert_ne!(NameGen::new(1).next_name(), NameGen::new(2).next_name());
    }
}

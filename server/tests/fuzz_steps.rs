//! The fuzz target's harness on random inputs, so `cargo test` runs it
//! without libFuzzer: no input may panic the session core.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_steps_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        redial_server::testing::fuzz_steps(&data);
    }
}

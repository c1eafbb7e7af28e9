//! Property tests over arbitrary input sequences, through the same harness
//! the fuzz targets use (`redial_core::fuzzing`): every invariant after
//! every step, and the same seed giving the same trace.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use arbitrary::{Arbitrary, Unstructured};
use proptest::prelude::*;
use redial_core::fuzzing::{self, LadderScenario, SessionScenario};

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn session_invariants_hold_for_any_inputs(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut u = Unstructured::new(&bytes);
        if let Ok(s) = SessionScenario::arbitrary(&mut u) {
            fuzzing::session_events(Instant::now(), &s);
        }
    }

    #[test]
    fn ladder_bounds_hold_for_any_policy(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut u = Unstructured::new(&bytes);
        if let Ok(s) = LadderScenario::arbitrary(&mut u) {
            fuzzing::backoff_ladder(&s);
        }
    }

    #[test]
    fn any_close_code_is_handled(code in any::<u16>(), reason in proptest::collection::vec(any::<u8>(), 0..200)) {
        fuzzing::close_frame(Instant::now(), code, &reason);
    }

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::decode_frame(&bytes);
    }
}

/// Steps weighted towards what a live connection sees, so that generated
/// runs get connected, exchange traffic, drop and resume, rather than
/// feeding inputs to a session that is still dialing.
fn step() -> impl Strategy<Value = fuzzing::Step> {
    use fuzzing::Step;
    prop_oneof![
        8 => (0u16..3000).prop_map(Step::Advance),
        8 => Just(Step::AdvanceToTimeout),
        2 => Just(Step::Connect),
        10 => Just(Step::DialOk),
        2 => Just(Step::DialIo),
        2 => (prop_oneof![Just(401u16), Just(403), Just(429), Just(503), Just(500)], proptest::option::of(0u8..5))
            .prop_map(|(s, ra)| Step::DialHttp(s, ra)),
        4 => Just(Step::TokenOk),
        1 => any::<bool>().prop_map(Step::TokenFailed),
        8 => (0u8..3, 1u8..64).prop_map(|(c, n)| Step::Publish(c, n)),
        8 => (1u8..64).prop_map(Step::Send),
        2 => (0u8..4).prop_map(Step::Subscribe),
        1 => (0u8..4).prop_map(Step::Unsubscribe),
        6 => (any::<bool>(), 0u8..40, 0u16..5000).prop_map(|(resumed, last_client_seq, lifetime_ms)| Step::Welcome { resumed, last_client_seq, lifetime_ms }),
        8 => (0u8..40).prop_map(Step::Ack),
        8 => (1u8..40).prop_map(Step::Message),
        4 => (prop_oneof![Just(None), Just(Some(1000u16)), Just(Some(1001)), Just(Some(1012)), Just(Some(1013)), Just(Some(1008)), Just(Some(4002)), Just(Some(4010)), Just(Some(4001))])
            .prop_map(|c| Step::TransportClosed(c, "bye".into())),
        1 => (0u16..2000, 0u16..2000).prop_map(|(r, w)| Step::GoingAway(r, w)),
        1 => Just(Step::GoingAway(0, 0)),
        1 => (1u16..8, any::<bool>()).prop_map(|(c, t)| Step::Error(c, t)),
        1 => (0u8..4).prop_map(Step::Subscribed),
        1 => (0u8..4).prop_map(Step::SubscribeError),
        1 => Just(Step::Close),
        1 => Just(Step::RetryNow),
        1 => Just(Step::Wake),
        1 => Just(Step::NetworkOnline),
        1 => Just(Step::Pong),
        1 => proptest::collection::vec(any::<u8>(), 0..16).prop_map(Step::Binary),
    ]
}

/// The default policy, and two whose delays have a lower bound above zero,
/// so that a delay taken under the ladder's lower bound shows.
fn policy() -> impl Strategy<Value = fuzzing::PolicyChoice> {
    use fuzzing::PolicyChoice;
    prop_oneof![
        Just(PolicyChoice::Default),
        Just(PolicyChoice::Proportional(500, 10, 20, 30_000)),
        Just(PolicyChoice::Decorrelated(200, 20_000)),
    ]
}

fn scenario() -> impl Strategy<Value = SessionScenario> {
    (
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        0u8..8,
        policy(),
        proptest::collection::vec(step(), 1..160),
    )
        .prop_map(
            |(seed, wire, token_provider, max_attempts, policy, steps)| {
                let mut steps = steps;
                steps.insert(0, fuzzing::Step::Connect);
                SessionScenario {
                    seed,
                    wire,
                    token_provider,
                    max_attempts,
                    policy,
                    steps,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// With Wire: no acked message resent, no unacked message lost, nothing
    /// delivered twice, same trace for the same seed — across drops at any
    /// point (the harness asserts all of it after every step).
    #[test]
    fn continuity_holds_across_drops_at_arbitrary_points(s in scenario()) {
        fuzzing::session_events(Instant::now(), &s);
    }
}

/// The generator is only useful if its runs get somewhere: most connect,
/// and messages flow.
#[test]
fn generated_runs_reach_connected_and_traffic() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut connected, mut messages, mut acked) = (0, 0, 0);
    for _ in 0..200 {
        let s = scenario().new_tree(&mut runner).unwrap().current();
        let t = fuzzing::trace(Instant::now(), &s);
        connected += usize::from(t.iter().any(|l| l.starts_with("Connected")));
        messages += t.iter().filter(|l| l.starts_with("Message")).count();
        acked += t.iter().filter(|l| l.starts_with("Acked")).count();
    }
    assert!(connected >= 50, "only {connected}/200 runs connected");
    assert!(
        messages >= 100 && acked >= 10,
        "{messages} messages, {acked} acks"
    );
}

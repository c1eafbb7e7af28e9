//! The whole system in one process, no sockets: real client sessions, real
//! server connections on two nodes and a memory store on one virtual clock
//! (`redial_tests::sim`), driven by generated steps against a reference
//! model (proptest-state-machine).
//!
//! The model says what the steps are and what must hold once they are
//! over: every client whose session did not end is connected again, every
//! message it published is acknowledged, and its subscriptions are the ones
//! it asked for. The world checks the rest after every step (see the
//! module docs of `redial_tests::sim`): publishes applied once, offsets
//! increasing with gaps only where the store trimmed, resumes exactly when
//! the token lifetime, the key and the store allow, no dial loop.
//!
//! `planted_bug_is_caught_and_shrinks` runs the same steps against a store
//! that loses its dedupe mark and checks the failure is found and shrinks
//! to at most ten steps. `transitions_per_second` prints how fast steps
//! run (`cargo test -p redial-tests --release --test simulation --
//! --nocapture transitions_per_second`); nothing asserts on time.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestError, TestRng, TestRunner};
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use redial_tests::sim::{SimConfig, Step, Tally, World, CHANNELS};

const CLIENTS: usize = 3;
const NODES: usize = 2;

/// What the steps so far imply.
#[derive(Debug, Clone, Default)]
struct Model {
    published: [u64; CLIENTS],
    subscribed: [BTreeSet<usize>; CLIENTS],
}

fn step() -> impl Strategy<Value = Step> {
    let client = 0..CLIENTS;
    let node = 0..NODES;
    let channel = 0..CHANNELS.len();
    prop_oneof![
        6 => (client.clone(), channel.clone())
            .prop_map(|(client, channel)| Step::Publish { client, channel }),
        2 => (client.clone(), channel).prop_map(|(client, channel)| Step::Subscribe { client, channel }),
        2 => client.clone().prop_map(|client| Step::Cut { client }),
        1 => client.clone().prop_map(|client| Step::Blackhole { client }),
        1 => (client.clone(), 0u64..300).prop_map(|(client, ms)| Step::Delay { client, ms }),
        1 => client.clone().prop_map(|client| Step::SlowConsumer { client }),
        1 => (node.clone(), any::<bool>()).prop_map(|(node, keep_key)| Step::Restart { node, keep_key }),
        1 => node.prop_map(|node| Step::GoingAway { node }),
        4 => (1u64..20).prop_map(|ms| Step::Advance { ms }),
        3 => (20u64..3_000).prop_map(|ms| Step::Advance { ms }),
        1 => (3_000u64..40_000).prop_map(|ms| Step::Advance { ms }),
        1 => (1_000u64..60_000).prop_map(|ms| Step::ClockJump { ms }),
        1 => client.prop_map(|client| Step::TokenExpiry { client }),
    ]
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Step> {
        step().boxed()
    }

    fn apply(mut model: Model, step: &Step) -> Model {
        match *step {
            Step::Publish { client, .. } => model.published[client] += 1,
            Step::Subscribe { client, channel } => {
                model.subscribed[client].insert(channel);
            }
            _ => {}
        }
        model
    }
}

fn world(planted_bug: bool) -> World {
    World::new(SimConfig {
        clients: CLIENTS,
        nodes: NODES,
        planted_bug,
        ..SimConfig::default()
    })
}

/// What must hold once the steps are over and the world settled.
fn settled(world: &mut World, model: &Model) -> Result<(), String> {
    world.settle();
    world.check()?;
    for c in 0..CLIENTS {
        if world.closed(c) {
            continue;
        }
        if !world.connected(c) {
            return Err(format!("client {c} is not connected after settling"));
        }
        if world.unacked(c) > 0 {
            return Err(format!(
                "client {c}: {} of {} publishes not acknowledged after settling",
                world.unacked(c),
                model.published[c]
            ));
        }
        let want: BTreeSet<String> = model.subscribed[c]
            .iter()
            .map(|&i| CHANNELS[i].to_owned())
            .collect();
        let have: BTreeSet<String> = world.subscriptions(c).into_iter().collect();
        if have != want {
            return Err(format!(
                "client {c}: subscribed to {have:?}, asked for {want:?}"
            ));
        }
    }
    Ok(())
}

/// Runs `steps` on a fresh world; the first violation, if any. `seen`
/// counts the steps applied, as the shrinker needs to know.
fn run(steps: &[Step], planted_bug: bool, seen: Option<&AtomicUsize>) -> Result<(), String> {
    let mut w = world(planted_bug);
    let mut model = Model::default();
    for s in steps {
        if let Some(seen) = seen {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        model = Reference::apply(model, s);
        w.apply(s);
        w.check()?;
    }
    settled(&mut w, &model)
}

struct Simulation;

impl StateMachineTest for Simulation {
    type SystemUnderTest = World;
    type Reference = Reference;

    fn init_test(_: &Model) -> World {
        world(false)
    }

    fn apply(mut world: World, _: &Model, step: Step) -> World {
        world.apply(&step);
        world
    }

    fn check_invariants(world: &World, _: &Model) {
        if let Err(v) = world.check() {
            panic!("{v}");
        }
    }

    fn teardown(mut world: World, model: Model) {
        if let Err(v) = settled(&mut world, &model) {
            panic!("{v}");
        }
    }
}

/// 96 cases take a few seconds; `PROPTEST_CASES` asks for more.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96)
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        // Generating steps with ChaCha costs more than running them.
        rng_algorithm: RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    })]

    #[test]
    fn whole_system(sequential 1..60 => Simulation);
}

#[test]
fn planted_bug_is_caught_and_shrinks() {
    let config = RunnerConfig {
        cases: 512,
        failure_persistence: None,
        ..RunnerConfig::default()
    };
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let result = runner.run(
        &Reference::sequential_strategy(1..40),
        |(_, steps, seen)| run(&steps, true, seen.as_deref()).map_err(TestCaseError::fail),
    );
    let Err(TestError::Fail(why, (_, steps, _))) = result else {
        panic!("the planted bug was not caught: {result:?}");
    };
    eprintln!(
        "planted bug: shrunk to {} steps: {steps:?}: {why}",
        steps.len()
    );
    assert!(
        steps.len() <= 10,
        "shrunk to {} steps: {steps:?}",
        steps.len()
    );
    // The same steps pass against the correct store: the bug, not the
    // steps, made them fail.
    assert_eq!(run(&steps, false, None), Ok(()));
}

#[test]
fn transitions_per_second() {
    let mut runner = TestRunner::new_with_rng(
        RunnerConfig::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = proptest::collection::vec(step(), 60);
    let mut steps = 0u64;
    let mut virtual_ms = 0u64;
    let mut seen = Tally::default();
    // Generated before the clock starts: the figure is the simulation's.
    let cases: Vec<Vec<Step>> = (0..100)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();
    let started = Instant::now();
    for case in cases {
        let mut w = world(false);
        for s in &case {
            w.apply(s);
        }
        w.check().unwrap();
        let t = w.tally();
        steps += t.steps;
        virtual_ms += w.now();
        seen.applied += t.applied;
        seen.delivered += t.delivered;
        seen.resumed += t.resumed;
        seen.fresh += t.fresh;
        seen.dials += t.dials;
        seen.gaps += t.gaps;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "simulation: {steps} transitions in {secs:.3} s = {:.0} transitions/s ({:.0} virtual seconds)",
        steps as f64 / secs,
        virtual_ms as f64 / 1000.0
    );
    seen.steps = steps;
    eprintln!("simulation: what those runs did: {seen:?}");
}

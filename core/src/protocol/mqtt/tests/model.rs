//! A model test of the QoS 1 and 2 exchange across reconnects: any
//! interleaving of publishes, packets crossing, and links dropping with
//! packets still on them, against a broker that keeps its session.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone, Copy)]
enum Op {
    Publish,
    /// The broker reads the oldest packet on the link.
    ToBroker,
    /// The client reads the oldest packet from the broker.
    ToClient,
    /// The link dies with whatever is on it.
    Drop,
    /// The client comes back; the broker has the session.
    Reconnect,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Publish),
        4 => Just(Op::ToBroker),
        4 => Just(Op::ToClient),
        1 => Just(Op::Drop),
        1 => Just(Op::Reconnect),
    ]
}

/// A broker with a persistent session: QoS 2 ids it has from PUBLISH until
/// PUBREL, and every message it took, in order.
#[derive(Default)]
struct Broker {
    qos2: BTreeSet<u16>,
    got: Vec<String>,
}

impl Broker {
    fn take(&mut self, p: Packet) -> Option<Packet> {
        match p {
            Packet::Publish(p) => {
                let id = p.packet_id?;
                let body = String::from_utf8(p.payload.to_vec()).ok()?;
                match p.qos {
                    QoS::ExactlyOnce => {
                        if self.qos2.insert(id) {
                            self.got.push(body);
                        }
                        Some(Packet::PubRec(ack(id)))
                    }
                    _ => {
                        self.got.push(body);
                        Some(Packet::PubAck(ack(id)))
                    }
                }
            }
            Packet::PubRel(a) => {
                self.qos2.remove(&a.packet_id);
                Some(Packet::PubComp(ack(a.packet_id)))
            }
            _ => None,
        }
    }
}

struct Link {
    up: bool,
    to_broker: VecDeque<Packet>,
    to_client: VecDeque<Packet>,
}

fn step(h: &mut H, broker: &mut Broker, link: &mut Link, op: Op, published: &mut Vec<u64>) {
    match op {
        Op::Publish => {
            let n = published.len();
            if let Ok(seq) = h.s.handle_publish(h.now, "t", Payload::text(n.to_string())) {
                published.push(seq);
            }
        }
        Op::ToBroker if link.up => {
            if let Some(p) = link.to_broker.pop_front() {
                link.to_client.extend(broker.take(p));
            }
        }
        Op::ToClient if link.up => {
            if let Some(p) = link.to_client.pop_front() {
                h.reply(p);
            }
        }
        Op::Drop if link.up => {
            link.up = false;
            link.to_broker.clear();
            link.to_client.clear();
            h.drop_link();
        }
        Op::Reconnect if !link.up => {
            h.open();
            h.reply(connack(true, 0));
            link.up = true;
        }
        _ => {}
    }
    let sent = h.sent();
    if link.up {
        link.to_broker.extend(sent);
    }
}

fn run(qos: QoS, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = connected(v311().qos(qos).max_in_flight(3));
    let mut broker = Broker::default();
    let mut link = Link {
        up: true,
        to_broker: VecDeque::new(),
        to_client: VecDeque::new(),
    };
    let mut published = Vec::new();
    for &op in ops {
        step(&mut h, &mut broker, &mut link, op, &mut published);
    }
    // Then a link that holds until everything is through.
    step(
        &mut h,
        &mut broker,
        &mut link,
        Op::Reconnect,
        &mut published,
    );
    for _ in 0..10_000 {
        if link.to_broker.is_empty() && link.to_client.is_empty() {
            break;
        }
        step(&mut h, &mut broker, &mut link, Op::ToBroker, &mut published);
        step(&mut h, &mut broker, &mut link, Op::ToClient, &mut published);
    }
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for body in &broker.got {
        *count.entry(body.clone()).or_default() += 1;
    }
    for n in 0..published.len() {
        let got = count.get(&n.to_string()).copied().unwrap_or(0);
        prop_assert!(got >= 1, "message {n} lost");
        if qos == QoS::ExactlyOnce {
            prop_assert_eq!(got, 1, "message {} duplicated", n);
        }
    }
    prop_assert_eq!(count.len(), published.len());
    let acked = h
        .take_events()
        .iter()
        .filter_map(|e| match e {
            Event::Acked { seq } => Some(*seq),
            _ => None,
        })
        .max();
    prop_assert_eq!(acked, published.last().copied());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn qos1_loses_nothing_across_reconnects(ops in proptest::collection::vec(op(), 0..120)) {
        run(QoS::AtLeastOnce, &ops)?;
    }

    #[test]
    fn qos2_loses_and_duplicates_nothing_across_reconnects(ops in proptest::collection::vec(op(), 0..120)) {
        run(QoS::ExactlyOnce, &ops)?;
    }
}

//! The Redis Cluster launcher works: one key in each of the 16,384 slots,
//! written through the `redis` crate's cluster client, is read back whole
//! after a master is killed and its replica promoted, through the async
//! cluster client and through the store suites' `Backend::query`.

mod backend;

use std::time::Duration;

use futures_util::{stream, StreamExt, TryStreamExt};
use redial_tests::third_party::redis_cluster::RedisCluster;
use redial_tests::third_party::started;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::AsyncCommands;

use backend::Backend;

const SLOTS: u16 = 16_384;
/// Commands in flight at once on the cluster connection. With 64 GETs
/// outstanding for the dead master's slots right after the failover, the
/// `redis` crate's cluster client (1.2.2) timed nearly all of them out and
/// did not recover (1,005 of 1,024 in one run); with 1 to 32 none failed.
const IN_FLIGHT: usize = 16;

/// The slot Redis Cluster gives `key` (no hash tag): CRC16/XMODEM of the
/// key, modulo the slot count. Checked against `CLUSTER KEYSLOT` below.
fn slot(key: &str) -> u16 {
    let mut crc: u16 = 0;
    for &byte in key.as_bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS
}

/// One key for each slot, indexed by slot.
fn key_per_slot() -> Vec<String> {
    let mut keys: Vec<Option<String>> = vec![None; usize::from(SLOTS)];
    let mut missing = keys.len();
    let mut n = 0u64;
    while missing > 0 {
        let key = format!("k{n}");
        let s = usize::from(slot(&key));
        if keys[s].is_none() {
            keys[s] = Some(key);
            missing -= 1;
        }
        n += 1;
    }
    keys.into_iter().flatten().collect()
}

async fn connect(cluster: &RedisCluster) -> ClusterConnection {
    ClusterClient::builder(cluster.urls())
        .response_timeout(Duration::from_secs(5))
        // A request to the dead master is retried (after the client learns
        // the new topology) within this, not failed at the first timeout;
        // the default first retry waits at least 1.28 s.
        .overall_response_timeout(Some(Duration::from_secs(10)))
        .min_retry_wait(10)
        .max_retry_wait(1_000)
        .build()
        .unwrap_or_else(|e| panic!("cluster client: {e}"))
        .get_async_connection()
        .await
        .unwrap_or_else(|e| panic!("cluster connection: {e}"))
}

async fn read_all(conn: &ClusterConnection, keys: &[String]) -> Vec<Option<String>> {
    stream::iter(keys)
        .map(|key| {
            let mut conn = conn.clone();
            async move { conn.get::<_, Option<String>>(key).await }
        })
        .buffered(IN_FLIGHT)
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("reading the keys back: {e}"))
}

redial_tests::needs! { redis_cluster;
    #[test]
    fn every_slot_survives_a_master_failover() {
        let begun = std::time::Instant::now();
        let cluster = started(RedisCluster::start());
        let start_took = begun.elapsed();
        let masters = cluster
            .masters()
            .unwrap_or_else(|e| panic!("masters: {e}"));
        assert_eq!(masters.len(), 3, "three masters");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let keys = key_per_slot();
        let conn = rt.block_on(async {
            let mut conn = connect(&cluster).await;
            // The slots computed here are the cluster's.
            for key in keys.iter().step_by(97) {
                let theirs: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT: {e}"));
                assert_eq!(theirs, slot(key), "{key}");
            }
            stream::iter(&keys)
                .map(|key| {
                    let mut conn = conn.clone();
                    async move { conn.set::<_, _, ()>(key, format!("v-{key}")).await }
                })
                .buffer_unordered(IN_FLIGHT)
                .try_collect::<Vec<()>>()
                .await
                .unwrap_or_else(|e| panic!("writing: {e}"));
            // Every master's writes reached its replica before the kill:
            // WAIT goes to each master, and the smallest count comes back.
            let replicated: u64 = redis::cmd("WAIT")
                .arg(1)
                .arg(5_000)
                .query_async(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("WAIT: {e}"));
            assert_eq!(replicated, 1, "each master's replica acknowledged");
            conn
        });

        // keys[i] is in slot i: the second master serves the middle third.
        assert_eq!(cluster.master_of(&keys[0]).ok(), Some(0));
        assert_eq!(cluster.master_of(&keys[16_383]).ok(), Some(2));
        let victim = cluster
            .master_of(&keys[8_000])
            .unwrap_or_else(|e| panic!("master_of: {e}"));
        assert_eq!(victim, 1);
        let killed = cluster
            .kill_master(victim)
            .unwrap_or_else(|e| panic!("killing a master: {e}"));
        assert_eq!(killed.addr, masters[1]);
        let promoted = cluster
            .wait_promoted(&killed)
            .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log()));
        assert_eq!(promoted.addr, killed.replica);
        eprintln!(
            "redis cluster: formed in {start_took:?}, replica promoted {:?} after the kill",
            promoted.took
        );
        let now = cluster
            .masters()
            .unwrap_or_else(|e| panic!("masters: {e}"));
        assert_eq!(
            now,
            [masters[0], killed.replica, masters[2]],
            "the replica serves the dead master's slots"
        );

        let reading = std::time::Instant::now();
        let got = rt.block_on(read_all(&conn, &keys));
        eprintln!("redis cluster: read back in {:?}", reading.elapsed());
        let want: Vec<Option<String>> = keys.iter().map(|k| Some(format!("v-{k}"))).collect();
        let lost = got.iter().zip(&want).filter(|(g, w)| g != w).count();
        assert_eq!(lost, 0, "keys lost or changed by the failover");
        // The launcher's urls are the client's seeds: a new client finds
        // the new topology from them with one node dead.
        let fresh = rt.block_on(async { read_all(&connect(&cluster).await, &keys[..64]).await });
        assert_eq!(fresh, want[..64]);
        // So does the store suites' way of reading what a store wrote.
        let backend = Backend::Cluster(cluster);
        for (key, want) in keys.iter().zip(&want).step_by(97) {
            let got: Option<String> = backend
                .query(redis::cmd("GET").arg(key))
                .unwrap_or_else(|e| panic!("GET {key}: {e}"));
            assert_eq!(&got, want);
        }
    }
}

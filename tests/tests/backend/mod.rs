//! What the store suites run on (the storage conformance suite, the cluster
//! soak): the memory store, or the Redis store on one `redis-server` or on
//! a Redis Cluster with failover. Each Redis store a suite uses is built
//! from [`Target::builder`], the one place that picks the constructor for
//! the setup, so a suite body is written once for every setup.

// Each suite uses a part of this.
#![allow(dead_code)]

use redial_server::redis::{RedisStore, RedisStoreBuilder};
use redial_tests::third_party::redis::RedisServer;
use redial_tests::third_party::redis_cluster::{Promoted, RedisCluster};
use redial_tests::third_party::{started, LaunchError};

/// The servers behind a suite's stores, stopped when dropped.
#[derive(Debug)]
pub enum Backend {
    /// The memory store: one process, nothing to start.
    Memory,
    /// One `redis-server`.
    Redis(RedisServer),
    /// A Redis Cluster: three masters, three replicas.
    Cluster(RedisCluster),
}

/// Where a node finds the Redis store: cheap to clone and to send to the
/// thread a node runs on (the [`Backend`] itself stays with the test).
#[derive(Clone, Debug)]
pub enum Target {
    /// One `redis-server` at this URL.
    Redis(String),
    /// A Redis Cluster with these seed URLs.
    Cluster(Vec<String>),
}

impl Target {
    /// A Redis store builder on this target (always `Some` now that the
    /// Redis store runs on both). The one place a suite's Redis stores are
    /// made: a suite sets prefix, caps and TTLs on what this returns.
    pub fn builder(&self) -> Option<RedisStoreBuilder> {
        match self {
            Target::Redis(url) => Some(RedisStore::builder(url)),
            // Every write waits for a replica, so a failover loses nothing.
            Target::Cluster(urls) => {
                Some(RedisStore::cluster_builder(urls.clone()).wait_for_replicas(1))
            }
        }
    }
}

impl Backend {
    /// One fresh `redis-server` (the test carries `needs!(redis; ..)`).
    pub fn redis() -> Backend {
        Backend::Redis(started(RedisServer::start()))
    }

    /// A fresh Redis Cluster (the test carries `needs!(redis_cluster; ..)`).
    pub fn cluster() -> Backend {
        Backend::Cluster(started(RedisCluster::start()))
    }

    /// Where Redis stores on this backend connect; `None` for memory.
    pub fn target(&self) -> Option<Target> {
        match self {
            Backend::Memory => None,
            Backend::Redis(server) => Some(Target::Redis(server.url())),
            Backend::Cluster(cluster) => Some(Target::Cluster(cluster.urls())),
        }
    }

    /// A Redis store builder on this backend (see [`Target::builder`]).
    ///
    /// # Panics
    /// On memory.
    #[track_caller]
    pub fn redis_builder(&self) -> RedisStoreBuilder {
        match self.target().and_then(|t| t.builder()) {
            Some(builder) => builder,
            None => panic!("no Redis store on {}", self.name()),
        }
    }

    /// Whether [`fail_over`](Self::fail_over) can kill a master.
    pub fn fails_over(&self) -> bool {
        matches!(self, Backend::Cluster(_))
    }

    /// On a cluster: kills the master serving `key` (SIGKILL) and returns
    /// once its replica serves its slots; `None` elsewhere, where there is
    /// nothing to fail over.
    pub fn fail_over(&self, key: &str) -> Option<Result<Promoted, LaunchError>> {
        let Backend::Cluster(cluster) = self else {
            return None;
        };
        Some(
            cluster
                .master_of(key)
                .and_then(|i| cluster.kill_master(i))
                .and_then(|killed| cluster.wait_promoted(&killed)),
        )
    }

    /// Runs `cmd` on this backend's Redis (on a cluster, on the node that
    /// holds its key), on a connection of its own: for a test that reads
    /// what the store wrote.
    ///
    /// # Panics
    /// On memory, which has no Redis.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Backend::Memory => panic!("the memory store has no Redis to query"),
            Backend::Redis(server) => {
                let mut conn = redis::Client::open(server.url())?.get_connection()?;
                cmd.query(&mut conn)
            }
            Backend::Cluster(cluster) => {
                let mut conn =
                    redis::cluster::ClusterClient::new(cluster.urls())?.get_connection()?;
                cmd.query(&mut conn)
            }
        }
    }

    /// The last lines the servers logged, for a failure message.
    pub fn log(&self) -> String {
        match self {
            Backend::Memory => String::new(),
            Backend::Redis(server) => server.log(),
            Backend::Cluster(cluster) => cluster.log(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "the memory store",
            Backend::Redis(_) => "a redis-server",
            Backend::Cluster(_) => "a Redis Cluster",
        }
    }
}

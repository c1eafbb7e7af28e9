//! Which third-party servers this machine has, shared by the launchers and
//! by `build.rs` (which includes this file by path, so it uses nothing but
//! `std`).
//!
//! The build script turns each [`Server`] found into a `cfg` (its
//! [`Server::cfg`]); the suites mark each test that needs a server with
//! `redial_tests::needs!`, which reads that cfg, so cargo reports the test
//! as *ignored* with the install command, never as passed, on a machine
//! without the server. With `CI` set the build script sets every cfg, so a
//! missing server fails its tests instead.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// A server the suites need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// `nats-server` on `PATH`.
    Nats,
    /// `redis-server` on `PATH`.
    Redis,
    /// `node` on `PATH` and `npm ci` run in `tests/graphql-server`.
    Graphql,
    /// `mosquitto` and `mosquitto_passwd` on `PATH` (Debian installs the
    /// broker in `/usr/sbin`).
    Mosquitto,
    /// `npm ci` run in `tests/anvil` (the binary ships in the package).
    Anvil,
    /// `node` on `PATH` and `npm ci` run in `tests/socketio-server`.
    SocketIo,
    /// `redis-server` and `redis-cli` on `PATH`, for a Redis Cluster.
    RedisCluster,
}

impl Server {
    /// Every server, in the order the build script reports them.
    pub const ALL: [Server; 7] = [
        Server::Nats,
        Server::Redis,
        Server::Graphql,
        Server::Mosquitto,
        Server::Anvil,
        Server::SocketIo,
        Server::RedisCluster,
    ];

    /// The cfg the build script sets when the server is installed.
    pub fn cfg(self) -> &'static str {
        match self {
            Server::Nats => "redial_has_nats",
            Server::Redis => "redial_has_redis",
            Server::Graphql => "redial_has_graphql",
            Server::Mosquitto => "redial_has_mosquitto",
            Server::Anvil => "redial_has_anvil",
            Server::SocketIo => "redial_has_socketio",
            Server::RedisCluster => "redial_has_redis_cluster",
        }
    }

    /// The programs it needs on `PATH`.
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Server::Nats => &["nats-server"],
            Server::Redis => &["redis-server"],
            Server::Graphql => &["node"],
            Server::Mosquitto => &["mosquitto", "mosquitto_passwd"],
            Server::Anvil => &[],
            Server::SocketIo => &["node"],
            Server::RedisCluster => &["redis-server", "redis-cli"],
        }
    }

    /// A file under the `tests` package that must exist (what `npm ci`
    /// installs), if any.
    pub fn file(self) -> Option<&'static str> {
        match self {
            Server::Graphql => Some("graphql-server/node_modules/graphql-ws/package.json"),
            Server::Anvil => Some("anvil/node_modules/@foundry-rs/anvil/package.json"),
            Server::SocketIo => Some("socketio-server/node_modules/socket.io/package.json"),
            Server::Nats | Server::Redis | Server::Mosquitto | Server::RedisCluster => None,
        }
    }

    /// Whether everything it needs is there; `package` is the `tests`
    /// package's directory.
    pub fn installed(self, path: Option<&OsStr>, package: &Path) -> bool {
        self.programs()
            .iter()
            .all(|p| find_program(path, p).is_some())
            && self.file().is_none_or(|f| package.join(f).is_file())
    }
}

/// `program` in one of the directories of `path` (a `PATH` value), or
/// `None`.
pub fn find_program(path: Option<&OsStr>, program: &str) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

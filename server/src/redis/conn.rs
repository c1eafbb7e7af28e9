//! The link to Redis: one server or a Redis Cluster behind one type, every
//! call bounded by the store's response timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A connection to one Redis server or to a cluster; cheap to clone (every
/// clone shares one multiplexed link per node).
#[derive(Clone)]
pub(super) struct Conn {
    link: Link,
    /// Every call fails after this long, whatever the client library does.
    deadline: Duration,
    /// Replicas connected to the master of each slot (at most 16,384
    /// entries), for [`Conn::replicated`].
    replicas: Arc<Mutex<HashMap<Route, (usize, Instant)>>>,
}

/// How long [`Conn::replicated`] trusts a master's replica count.
const REPLICAS_FRESH: Duration = Duration::from_secs(1);

#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects to the server at `url`.
    pub(super) async fn single(url: &str, deadline: Duration) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        // Few, short reconnect attempts per call: with Redis gone a call
        // should fail fast (the connection closes with `internal` and the
        // client resumes later) rather than hold its connection for seconds.
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(deadline))
            .set_connection_timeout(Some(deadline))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = client.get_connection_manager_with_config(config).await?;
        Ok(Conn {
            link: Link::Single(manager),
            deadline,
            replicas: Arc::default(),
        })
    }

    /// Connects to the cluster that the nodes at `urls` belong to (any
    /// reachable one tells the client the rest).
    pub(super) async fn cluster(urls: &[String], deadline: Duration) -> redis::RedisResult<Self> {
        let client = ClusterClientBuilder::new(urls.to_vec())
            .connection_timeout(deadline)
            .response_timeout(deadline)
            .retries(3)
            .max_retry_wait(200)
            .build()?;
        let conn = client.get_async_connection().await?;
        Ok(Conn {
            link: Link::Cluster(conn),
            deadline,
            replicas: Arc::default(),
        })
    }
}

impl Conn {
    /// Whether every key is on one server (so one script may touch any).
    pub(super) fn is_single(&self) -> bool {
        matches!(self.link, Link::Single(_))
    }

    /// The slot of `key` on a cluster, `None` on one server: keys with the
    /// same answer may go to one script.
    pub(super) fn slot_of(&self, key: &str) -> Option<Route> {
        match self.link {
            Link::Single(_) => None,
            Link::Cluster(_) => Some(Route::with_key(key, SlotAddr::Master)),
        }
    }

    /// Waits until the replicas of the node holding `key` have every write
    /// this connection made to it (`WAIT`, at most the deadline): as many
    /// as `replicas`, or as many as that node has connected if fewer (a
    /// master without replicas, such as one just promoted, has nobody to
    /// fail over to). Fails when fewer confirm, since the write might not
    /// survive a failover.
    pub(super) async fn replicated(
        &mut self,
        key: &str,
        replicas: usize,
    ) -> redis::RedisResult<()> {
        if replicas == 0 {
            return Ok(());
        }
        let route = Route::with_key(key, SlotAddr::Master);
        let want = replicas.min(self.connected_replicas(route).await?);
        if want == 0 {
            return Ok(());
        }
        let mut wait = redis::cmd("WAIT");
        wait.arg(want).arg(millis(self.deadline));
        let confirmed = match self.on_node(wait, route).await? {
            Value::Int(n) => usize::try_from(n).unwrap_or(0),
            _ => 0,
        };
        if confirmed < want {
            // Ask again next time: the replica may be gone.
            self.replicas
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&route);
            return Err((
                redis::ErrorKind::Io,
                "fewer replicas than required confirmed a write",
            )
                .into());
        }
        Ok(())
    }

    /// How many replicas the master serving `route` has connected, as it
    /// said at most [`REPLICAS_FRESH`] ago.
    async fn connected_replicas(&mut self, route: Route) -> redis::RedisResult<usize> {
        {
            let known = self.replicas.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((n, at)) = known.get(&route) {
                if at.elapsed() < REPLICAS_FRESH {
                    return Ok(*n);
                }
            }
        }
        let mut info = redis::cmd("INFO");
        info.arg("replication");
        let text = match self.on_node(info, route).await? {
            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::VerbatimString { text, .. } => text,
            _ => String::new(),
        };
        let n = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut known = self.replicas.lock().unwrap_or_else(PoisonError::into_inner);
        known.insert(route, (n, Instant::now()));
        Ok(n)
    }

    /// Runs `cmd` on the master serving `route` (on one server, on it).
    async fn on_node(&mut self, cmd: Cmd, route: Route) -> redis::RedisResult<Value> {
        let deadline = self.deadline;
        let call = async {
            match &mut self.link {
                Link::Single(c) => cmd.query_async::<Value>(c).await,
                Link::Cluster(c) => {
                    let to = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                    c.route_command(cmd, to).await
                }
            }
        };
        // WAIT itself may take the deadline: one more for the round trip.
        tokio::time::timeout(deadline * 2, call)
            .await
            .map_err(|_| timed_out())?
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn timed_out() -> redis::RedisError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "Redis call past its deadline").into()
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let deadline = self.deadline;
        Box::pin(async move {
            let call = match &mut self.link {
                Link::Single(c) => c.req_packed_command(cmd),
                Link::Cluster(c) => c.req_packed_command(cmd),
            };
            tokio::time::timeout(deadline, call)
                .await
                .map_err(|_| timed_out())?
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let deadline = self.deadline;
        Box::pin(async move {
            let call = match &mut self.link {
                Link::Single(c) => c.req_packed_commands(cmd, offset, count),
                Link::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            };
            tokio::time::timeout(deadline, call)
                .await
                .map_err(|_| timed_out())?
        })
    }

    fn get_db(&self) -> i64 {
        match &self.link {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

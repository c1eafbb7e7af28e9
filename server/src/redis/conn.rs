//! The link to Redis: one server or a Redis Cluster behind one type, every
//! call bounded by the store's response timeout.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A connection to one Redis server or to a cluster; cheap to clone (every
/// clone shares one multiplexed link per node).
#[derive(Clone)]
pub(super) struct Conn {
    link: Link,
    /// Every call fails after this long, whatever the client library does.
    deadline: Duration,
}

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
        })
    }
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

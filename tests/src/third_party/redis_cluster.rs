//! A Redis Cluster on 127.0.0.1: six `redis-server --cluster-enabled yes`
//! processes (three masters, each with one replica) joined by
//! `redis-cli --cluster create`, with a short node timeout so a killed
//! master's replica takes over within a few seconds.
//!
//! Nothing is persisted (no snapshot, no append-only file: a killed node
//! is not restarted), and replicas sync without touching the disk. Needs
//! Redis 7.0 or later: each node's cluster bus gets its own free port
//! (`--cluster-port`), since the default (client port + 10000) may be past
//! 65535 for a port the kernel hands out.
//!
//! Readiness and failover are awaited by polling what the nodes report
//! (`CLUSTER INFO`, `CLUSTER NODES`, `INFO replication`) every
//! [`POLL`], each wait bounded by [`DEADLINE`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{find_program, LaunchError, Process, TempDir};

/// Masters in a cluster; each has one replica.
pub const MASTERS: usize = 3;
/// Nodes in a cluster.
const NODES: usize = MASTERS * 2;
/// How long a node may go unheard before the others count it as failing:
/// a failover takes about this plus one election (about a second).
const NODE_TIMEOUT_MS: u64 = 2_000;
/// Between two looks at the nodes' state while waiting.
pub const POLL: Duration = Duration::from_millis(25);
/// The longest [`RedisCluster::start`] waits for the cluster to form, and
/// [`RedisCluster::wait_promoted`] for a replica to take over.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// How long one command to a node may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How many sets of ports to try when another process takes one picked.
const PORT_TRIES: usize = 5;

/// One node: its client port and its process (`None` once killed).
#[derive(Debug)]
struct Node {
    addr: SocketAddr,
    process: Mutex<Option<Process>>,
}

/// A running Redis Cluster of three masters and three replicas, every
/// process killed and its directory removed on drop.
///
/// Kill a master with [`kill_master`](Self::kill_master), then wait for its
/// replica to take its slots with [`wait_promoted`](Self::wait_promoted).
/// Methods take `&self`, so one cluster can be shared with a chaos thread.
#[derive(Debug)]
pub struct RedisCluster {
    // Dropped in this order: the processes, then their directory.
    nodes: Vec<Node>,
    _dir: TempDir,
}

/// A master killed by [`RedisCluster::kill_master`]: what
/// [`RedisCluster::wait_promoted`] waits on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KilledMaster {
    /// The dead master's client address.
    pub addr: SocketAddr,
    /// Its cluster node id.
    pub id: String,
    /// Its replica's client address: the node expected to take over.
    pub replica: SocketAddr,
    /// The replica's cluster node id.
    pub replica_id: String,
    /// When it was killed.
    pub at: Instant,
}

/// A replica that took its dead master's slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promoted {
    /// Its client address.
    pub addr: SocketAddr,
    /// From the kill to every live node agreeing (and `cluster_state:ok`).
    pub took: Duration,
}

impl RedisCluster {
    /// Starts six nodes, makes them one cluster with `redis-cli --cluster
    /// create` and returns once every node reports `cluster_state:ok`, sees
    /// three masters covering every slot and three replicas, and every
    /// replica's link to its master is up.
    ///
    /// # Errors
    /// [`LaunchError::Missing`] without `redis-server` or `redis-cli` on
    /// `PATH`; others when a node does not start or the cluster does not
    /// form within [`DEADLINE`].
    pub fn start() -> Result<Self, LaunchError> {
        let server = find_program("redis-server").ok_or_else(|| missing("redis-server"))?;
        let cli = find_program("redis-cli").ok_or_else(|| missing("redis-cli"))?;
        let dir = TempDir::new("redial-redis-cluster")?;
        let mut last = None;
        let mut nodes = None;
        for _ in 0..PORT_TRIES {
            match launch_all(&server, &dir) {
                Ok(started) => {
                    nodes = Some(started);
                    break;
                }
                // A port was taken between picking and binding: others.
                Err(e) => last = Some(e),
            }
        }
        let Some(nodes) = nodes else {
            return Err(last.unwrap_or(LaunchError::Control("no ports tried".into())));
        };
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.create(&cli)?;
        cluster.wait_formed()?;
        Ok(cluster)
    }

    /// Every node's URL (`redis://127.0.0.1:PORT`), killed ones included:
    /// the seed list for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://{}", n.addr))
            .collect()
    }

    /// The live masters' addresses, ordered by the first slot each serves
    /// (so a promoted replica takes its dead master's place), as the first
    /// live node sees them.
    ///
    /// # Errors
    /// When no live node answers.
    pub fn masters(&self) -> Result<Vec<SocketAddr>, LaunchError> {
        Ok(masters(&self.view()?).into_iter().map(|m| m.addr).collect())
    }

    /// Which of [`masters`](Self::masters) serves `key` (hash tags
    /// included, as Redis computes it).
    ///
    /// # Errors
    /// When no live node answers, or no live master serves its slot.
    pub fn master_of(&self, key: &str) -> Result<usize, LaunchError> {
        let view = self.view()?;
        let mut last = None;
        for addr in self.live() {
            match command(addr, &["CLUSTER", "KEYSLOT", key]) {
                Ok(slot) => {
                    let slot: u16 = slot.parse().map_err(|_| {
                        LaunchError::Control(format!("{addr} gave {key:?} the slot {slot:?}"))
                    })?;
                    return masters(&view)
                        .iter()
                        .position(|m| m.serves(slot))
                        .ok_or_else(|| {
                            LaunchError::Control(format!(
                                "no live master serves slot {slot}; the cluster's view:\n{}",
                                describe(&view)
                            ))
                        });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(LaunchError::Control("every node is dead".into())))
    }

    /// Kills master `i` of [`masters`](Self::masters) with SIGKILL (no
    /// chance to hand anything over) and says which replica should take
    /// over; pass the result to [`wait_promoted`](Self::wait_promoted).
    ///
    /// # Errors
    /// When `i` is out of range, no live node answers, or the master has no
    /// live replica (it is itself a promoted replica whose old master is
    /// dead): killing it would lose its slots for good.
    pub fn kill_master(&self, i: usize) -> Result<KilledMaster, LaunchError> {
        let view = self.view()?;
        let masters = masters(&view);
        let master = masters.get(i).ok_or_else(|| {
            LaunchError::Control(format!(
                "no master {i}: the cluster has {} live masters",
                masters.len()
            ))
        })?;
        let replica = view
            .iter()
            .find(|n| n.master_id == master.id && n.is_replica() && !n.failing())
            .ok_or_else(|| {
                LaunchError::Control(format!(
                    "master {} has no live replica to take over; the cluster's view:\n{}",
                    master.addr,
                    describe(&view)
                ))
            })?;
        let node = self.node(master.addr)?;
        let mut process = lock(&node.process);
        match process.take() {
            Some(mut p) => p.kill(),
            None => {
                return Err(LaunchError::Control(format!(
                    "master {} was already killed",
                    master.addr
                )))
            }
        }
        Ok(KilledMaster {
            addr: master.addr,
            id: master.id.clone(),
            replica: replica.addr,
            replica_id: replica.id.clone(),
            at: Instant::now(),
        })
    }

    /// Waits until every live node sees `killed`'s replica as a master
    /// serving slots and the dead master as failed, and reports
    /// `cluster_state:ok`.
    ///
    /// # Errors
    /// When that has not happened within [`DEADLINE`] of the kill; the
    /// error holds each live node's last view.
    pub fn wait_promoted(&self, killed: &KilledMaster) -> Result<Promoted, LaunchError> {
        let deadline = killed.at + DEADLINE;
        loop {
            let mut views = Vec::new();
            let mut done = true;
            for addr in self.live() {
                match node_state(addr) {
                    Ok((ok, view)) => {
                        let promoted = view.iter().any(|n| {
                            n.id == killed.replica_id && n.is_master() && n.serves_slots()
                        });
                        let dead = view.iter().any(|n| n.id == killed.id && n.failing());
                        done &= ok && promoted && dead;
                        views.push(format!("{addr}:\n{}", describe(&view)));
                    }
                    Err(e) => {
                        done = false;
                        views.push(format!("{addr}: {e}"));
                    }
                }
            }
            if done {
                return Ok(Promoted {
                    addr: killed.replica,
                    took: killed.at.elapsed(),
                });
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::Control(format!(
                    "replica {} of the killed master {} was not promoted within {DEADLINE:?}; \
                     the live nodes' views:\n{}",
                    killed.replica,
                    killed.addr,
                    views.join("\n")
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The last lines each live node logged, for a failure message.
    pub fn log(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|n| {
                lock(&n.process)
                    .as_ref()
                    .map(|p| format!("--- {}\n{}", n.addr, p.log()))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The live nodes' addresses.
    fn live(&self) -> Vec<SocketAddr> {
        self.nodes
            .iter()
            .filter(|n| lock(&n.process).is_some())
            .map(|n| n.addr)
            .collect()
    }

    fn node(&self, addr: SocketAddr) -> Result<&Node, LaunchError> {
        self.nodes
            .iter()
            .find(|n| n.addr == addr)
            .ok_or_else(|| LaunchError::Control(format!("{addr} is not a node of this cluster")))
    }

    /// `CLUSTER NODES` from the first live node that answers.
    fn view(&self) -> Result<Vec<ClusterNode>, LaunchError> {
        let mut last = None;
        for addr in self.live() {
            match command(addr, &["CLUSTER", "NODES"]) {
                Ok(text) => return Ok(parse_nodes(&text)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(LaunchError::Control("every node is dead".into())))
    }

    /// `redis-cli --cluster create` over all nodes, one replica per master.
    fn create(&self, cli: &Path) -> Result<(), LaunchError> {
        let output = Command::new(cli)
            .arg("--cluster")
            .arg("create")
            .args(self.nodes.iter().map(|n| n.addr.to_string()))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| LaunchError::Io {
                what: "running redis-cli --cluster create".into(),
                source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(LaunchError::Control(format!(
                "redis-cli --cluster create failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }

    /// Polls every node until the cluster is whole (see [`Self::start`]).
    fn wait_formed(&self) -> Result<(), LaunchError> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut why = Vec::new();
            for node in &self.nodes {
                if let Err(e) = formed(node.addr) {
                    why.push(format!("{}: {e}", node.addr));
                }
            }
            if why.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::Control(format!(
                    "the Redis Cluster did not form within {DEADLINE:?}:\n{}\nthe nodes' logs:\n{}",
                    why.join("\n"),
                    self.log()
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Whether the node at `addr` sees the whole cluster: `cluster_state:ok`,
/// three masters covering every slot with a replica each, and (for a
/// replica) its link to its master up; the error says what is missing.
fn formed(addr: SocketAddr) -> Result<(), LaunchError> {
    let (ok, view) = node_state(addr)?;
    let not_yet = |what: String| Err(LaunchError::Control(what));
    if !ok {
        return not_yet("cluster_state is not ok".into());
    }
    let masters = masters(&view);
    let replicas = view
        .iter()
        .filter(|n| n.is_replica() && masters.iter().any(|m| m.id == n.master_id))
        .count();
    let settled = view.iter().all(|n| !n.failing() && !n.joining());
    if masters.len() != MASTERS || replicas != MASTERS || !settled {
        return not_yet(format!("the cluster's view:\n{}", describe(&view)));
    }
    let me = view.iter().find(|n| n.myself);
    if me.is_some_and(ClusterNode::is_replica) {
        let info = command(addr, &["INFO", "replication"])?;
        if !info.lines().any(|l| l.trim() == "master_link_status:up") {
            return not_yet("its link to its master is not up".into());
        }
    }
    Ok(())
}

/// `cluster_state:ok` and `CLUSTER NODES` of the node at `addr`.
fn node_state(addr: SocketAddr) -> Result<(bool, Vec<ClusterNode>), LaunchError> {
    let info = command(addr, &["CLUSTER", "INFO"])?;
    let ok = info.lines().any(|l| l.trim() == "cluster_state:ok");
    let nodes = command(addr, &["CLUSTER", "NODES"])?;
    Ok((ok, parse_nodes(&nodes)))
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
struct ClusterNode {
    id: String,
    addr: SocketAddr,
    flags: Vec<String>,
    /// The master's id for a replica, `-` for a master.
    master_id: String,
    /// The slot ranges it serves, each inclusive.
    slots: Vec<(u16, u16)>,
    /// The line as the node wrote it.
    line: String,
    myself: bool,
}

impl ClusterNode {
    fn flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
    fn is_master(&self) -> bool {
        self.flag("master")
    }
    fn is_replica(&self) -> bool {
        self.flag("slave")
    }
    /// Marked failed, or suspected (`fail?`).
    fn failing(&self) -> bool {
        self.flag("fail") || self.flag("fail?")
    }
    /// Still being introduced (no id agreed or no address yet).
    fn joining(&self) -> bool {
        self.flag("handshake") || self.flag("noaddr")
    }
    fn serves_slots(&self) -> bool {
        !self.slots.is_empty()
    }
    fn first_slot(&self) -> Option<u16> {
        self.slots.iter().map(|&(first, _)| first).min()
    }
    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

/// The live masters serving slots, ordered by their first slot.
fn masters(view: &[ClusterNode]) -> Vec<ClusterNode> {
    let mut masters: Vec<ClusterNode> = view
        .iter()
        .filter(|n| n.is_master() && !n.failing() && n.serves_slots())
        .cloned()
        .collect();
    masters.sort_by_key(ClusterNode::first_slot);
    masters
}

/// Parses `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags>
/// <master> <ping-sent> <pong-recv> <config-epoch> <link-state> <slot>...`;
/// lines it cannot read are skipped (the callers then wait on).
fn parse_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [id, addr, flags, master_id, ..] = fields[..] else {
                return None;
            };
            let addr = addr.split(['@', ',']).next()?.parse().ok()?;
            let flags: Vec<String> = flags.split(',').map(str::to_owned).collect();
            // Slots are `N` or `N-M`; `[N->-id]` marks a migration.
            let slots = fields
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| {
                    let (first, last) = s.split_once('-').unwrap_or((*s, *s));
                    Some((first.parse().ok()?, last.parse().ok()?))
                })
                .collect();
            Some(ClusterNode {
                id: id.to_owned(),
                addr,
                myself: flags.iter().any(|f| f == "myself"),
                flags,
                master_id: master_id.to_owned(),
                slots,
                line: line.to_owned(),
            })
        })
        .collect()
}

fn describe(view: &[ClusterNode]) -> String {
    view.iter()
        .map(|n| format!("  {}", n.line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sends one command and returns its reply as text (a status, an integer
/// or a bulk string); an error reply is an error.
fn command(addr: SocketAddr, args: &[&str]) -> Result<String, LaunchError> {
    let io = |source| LaunchError::Io {
        what: format!("sending {} to {addr}", args.join(" ")),
        source,
    };
    let mut stream = TcpStream::connect_timeout(&addr, COMMAND_TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT)).map_err(io)?;
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).map_err(io)?;
    let first = first.trim_end();
    let bad = || LaunchError::Control(format!("{addr} answered {args:?} with {first:?}"));
    match first.split_at_checked(1) {
        Some(("+" | ":", rest)) => Ok(rest.to_owned()),
        Some(("$", len)) => {
            let len: usize = len.parse().map_err(|_| bad())?;
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body).map_err(io)?;
            body.truncate(len);
            String::from_utf8(body).map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

fn missing(program: &str) -> LaunchError {
    LaunchError::Missing {
        what: program.into(),
        hint: "install redis-server and redis-tools with apt-get (Redis 7.0 or later)",
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding it leaves nothing half-written here.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `n` distinct free ports on 127.0.0.1, all held while picking so none
/// repeats (free when picked: a launch may still lose one to a race).
fn free_ports(n: usize) -> Result<Vec<u16>, LaunchError> {
    let io = |source| LaunchError::Io {
        what: "picking free ports".into(),
        source,
    };
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(io))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(io))
        .collect()
}

/// Starts the six nodes side by side and waits until each takes commands.
fn launch_all(program: &Path, dir: &TempDir) -> Result<Vec<Node>, LaunchError> {
    let ports = free_ports(NODES * 2)?;
    let mut nodes = Vec::with_capacity(NODES);
    for pair in ports.chunks_exact(2) {
        let addr = SocketAddr::from(([127, 0, 0, 1], pair[0]));
        let process = spawn(program, dir, addr, pair[1])?;
        nodes.push((addr, process));
    }
    for (_, process) in &mut nodes {
        process.wait_for(|line| line.contains("Ready to accept connections").then_some(()))?;
    }
    Ok(nodes
        .into_iter()
        .map(|(addr, process)| Node {
            addr,
            process: Mutex::new(Some(process)),
        })
        .collect())
}

fn spawn(
    program: &Path,
    dir: &TempDir,
    addr: SocketAddr,
    bus: u16,
) -> Result<Process, LaunchError> {
    let port = addr.port().to_string();
    let mut command = Command::new(program);
    // Everything on the command line, nothing persisted; each node keeps
    // its cluster state file apart from the others in the shared `dir`.
    command
        .current_dir(dir.path())
        .args(["--bind", "127.0.0.1", "--port", &port])
        .args(["--cluster-port", &bus.to_string()])
        .arg("--dir")
        .arg(dir.path())
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
        // A replica always stands for election, however long since it
        // heard from its master (it never was, before its first sync).
        .args(["--cluster-replica-validity-factor", "0"])
        // The topology stays as created: no replica moves to another master.
        .args(["--cluster-allow-replica-migration", "no"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        // A replica's first sync goes over the socket at once, not after
        // the default 5 s wait for more replicas.
        .args([
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        ])
        .args(["--protected-mode", "yes", "--logfile", ""]);
    Process::spawn("redis-server (cluster node)", command, true, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes() {
        let text = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:30002@40002,host master - 0 1700 2 connected 10923-16383 [5->-a1]
c3 127.0.0.1:30003@40003 master,fail - 1 1700 3 disconnected
d4 127.0.0.1:30004@40004 slave a1 0 1700 1 connected
e5 :0@0 handshake,noaddr - 0 0 0 disconnected
f6 127.0.0.1:30006@40006 master - 0 1700 4 connected 5461-10922
";
        let view = parse_nodes(text);
        assert_eq!(view.len(), 5, "the line without an address is skipped");
        assert!(view[0].myself);
        assert_eq!(view[1].addr, SocketAddr::from(([127, 0, 0, 1], 30002)));
        assert_eq!(view[1].slots, [(10923, 16383)]);
        assert!(view[1].serves(16383) && !view[1].serves(5));
        assert_eq!(view[3].slots, []);
        assert!(view[2].failing() && !view[2].serves_slots());
        assert!(view[3].is_replica());
        assert_eq!(view[3].master_id, "a1");
        let order: Vec<String> = masters(&view).into_iter().map(|m| m.id).collect();
        assert_eq!(order, ["a1", "f6", "b2"], "live masters, by first slot");
    }
}

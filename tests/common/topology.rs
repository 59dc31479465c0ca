//! Real multi-process Redis topologies for the Sentinel and Cluster tests: a Redis Cluster of
//! `n` masters and a master + replica watched by three sentinels. Every process gets free ports
//! (never 6379), every wait polls with a deadline, and everything is killed on drop.

use std::collections::{BTreeMap, HashSet};
use std::io::BufReader;
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::Value;
use tempfile::TempDir;
use tokio::sync::mpsc;

pub use super::eventually_within;
use super::free_port;

/// Forming a cluster or letting sentinels find each other takes a few seconds on a quiet
/// machine; leave room for a loaded one (the whole suite running alongside).
pub const TOPOLOGY_WAIT: Duration = Duration::from_secs(20);

pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// A fresh connection to one node, or `None` if it does not answer.
pub async fn try_conn(port: u16) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url(port)).ok()?;
    let fut = client.get_multiplexed_async_connection();
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()?
        .ok()
}

pub async fn conn(port: u16) -> redis::aio::MultiplexedConnection {
    try_conn(port)
        .await
        .unwrap_or_else(|| panic!("redis on port {port} does not answer"))
}

/// One command on a fresh connection to `port`; `None` on any error.
pub async fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Option<T> {
    let mut c = try_conn(port).await?;
    let fut = cmd.query_async::<T>(&mut c);
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()?
        .ok()
}

/// `field:value` from an `INFO`-style text.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(field)?.strip_prefix(':'))
}

pub async fn info(port: u16, section: &str) -> Option<String> {
    query(port, redis::cmd("INFO").arg(section)).await
}

/// The cluster slot of a key or shard channel: CRC16 (XMODEM) of its hash tag, or of all of it.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    let mut crc: u16 = 0;
    for &b in tagged.unwrap_or(bytes) {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// Ports handed out by this process, so that two nodes of one topology never draw the same one.
fn fresh_port(taken: &mut HashSet<u16>) -> u16 {
    loop {
        let p = free_port();
        if p != 6379 && taken.insert(p) {
            return p;
        }
    }
}

/// Spawns `redis-server` with the args `args(port)` builds and waits until the process itself
/// answers on that port (its `process_id` in `INFO server`, not some other test's server). If it
/// dies first (a port taken between `free_port()` and its bind), retries on new ports.
async fn spawn_server(
    taken: &mut HashSet<u16>,
    mut args: impl FnMut(u16, &mut HashSet<u16>) -> Vec<String>,
) -> (u16, Child) {
    for _ in 0..5 {
        let port = fresh_port(taken);
        let mut child = Command::new("redis-server")
            .args(args(port, taken))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH");
        let pid = child.id().to_string();
        let up = eventually_within(TOPOLOGY_WAIT, "redis-server to answer", || {
            let exited = child.try_wait().ok().flatten().is_some();
            let pid = pid.clone();
            async move {
                if exited {
                    return Some(false);
                }
                let info = info(port, "server").await?;
                (info_field(&info, "process_id")? == pid).then_some(true)
            }
        })
        .await;
        if up {
            return (port, child);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("redis-server did not start on any free port");
}

fn kill_child(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A Redis Cluster, slots spread by `redis-cli --cluster create`: masters only, or each master
/// with one replica that takes over when it dies.
pub struct Cluster {
    /// Every node's port, in start order (killed ones included).
    pub ports: Vec<u16>,
    children: BTreeMap<u16, Child>,
    _dir: TempDir,
}

impl Cluster {
    /// Masters only.
    pub async fn start(masters: usize) -> Self {
        Self::start_with_replicas(masters, 0).await
    }

    /// `masters` masters, each with `replicas` replicas.
    pub async fn start_with_replicas(masters: usize, replicas: usize) -> Self {
        assert!(
            masters >= 3,
            "redis-cli --cluster create needs at least 3 masters"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut taken = HashSet::new();
        let mut children = BTreeMap::new();
        let mut ports = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let d = dir.path().to_path_buf();
            let (port, child) = spawn_server(&mut taken, |port, taken| {
                let bus = fresh_port(taken);
                let conf = d.join(format!("nodes-{port}.conf"));
                let mut a: Vec<String> = ["--cluster-enabled", "yes", "--cluster-config-file"]
                    .map(String::from)
                    .to_vec();
                a.push(conf.display().to_string());
                a.extend(
                    [
                        "--cluster-node-timeout",
                        "2000",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--bind",
                        "127.0.0.1",
                    ]
                    .map(String::from),
                );
                a.extend(["--port".into(), port.to_string()]);
                a.extend(["--cluster-port".into(), bus.to_string()]);
                a.extend(["--dir".into(), d.display().to_string()]);
                a
            })
            .await;
            ports.push(port);
            children.insert(port, child);
        }

        let out = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("redis-cli must be on PATH (Debian: redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let cluster = Self {
            ports,
            children,
            _dir: dir,
        };
        let n = (masters * (1 + replicas)).to_string();
        for &port in &cluster.ports {
            let n = n.clone();
            eventually_within(TOPOLOGY_WAIT, "every node to see the cluster ok", || {
                let n = n.clone();
                async move {
                    let info: String = query(port, redis::cmd("CLUSTER").arg("INFO")).await?;
                    (info_field(&info, "cluster_state") == Some("ok")
                        && info_field(&info, "cluster_slots_ok") == Some("16384")
                        && info_field(&info, "cluster_known_nodes") == Some(n.as_str()))
                    .then_some(())
                }
            })
            .await;
        }
        // A replica can take over only once it has synced with its master.
        for &port in &cluster.ports {
            eventually_within(TOPOLOGY_WAIT, "every replica to sync", || async move {
                let info = info(port, "replication").await?;
                let role = info_field(&info, "role")?;
                (role == "master" || info_field(&info, "master_link_status") == Some("up"))
                    .then_some(())
            })
            .await;
        }
        cluster
    }

    /// Ports of the nodes still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.children.keys().copied().collect()
    }

    /// Seed URLs of the running nodes.
    pub fn seeds(&self) -> Vec<String> {
        self.live_ports().into_iter().map(url).collect()
    }

    fn any_live(&self) -> u16 {
        *self.children.keys().next().expect("no node left running")
    }

    /// The slot of a key or shard channel (hash tags included), as the cluster computes it.
    pub async fn slot_of(&self, key: &str) -> u16 {
        let mut c = conn(self.any_live()).await;
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap()
    }

    /// The port of the master that owns `key`'s slot (a key or a shard channel).
    pub async fn owner_of(&self, key: &str) -> u16 {
        let slot = self.slot_of(key).await;
        self.slot_ranges()
            .await
            .into_iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, owner)| owner)
            .unwrap_or_else(|| panic!("no node owns slot {slot}"))
    }

    /// `CLUSTER SLOTS` as (first slot, last slot, the master's port).
    async fn slot_ranges(&self) -> Vec<(u16, u16, u16)> {
        let mut c = conn(self.any_live()).await;
        let slots: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut c)
            .await
            .unwrap();
        let Value::Array(ranges) = slots else {
            panic!("CLUSTER SLOTS: {slots:?}");
        };
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => u16::try_from(*n).unwrap(),
            other => panic!("CLUSTER SLOTS entry: {other:?}"),
        };
        let mut out = Vec::new();
        for range in ranges {
            let Value::Array(r) = range else { continue };
            let Some(Value::Array(master)) = r.get(2) else {
                panic!("CLUSTER SLOTS range: {r:?}");
            };
            out.push((int(r.first()), int(r.get(1)), int(master.get(1))));
        }
        out
    }

    /// The lowest slot the master at `port` owns: the one `redis-cli --cluster reshard` takes
    /// first from it.
    pub async fn first_slot_of(&self, port: u16) -> u16 {
        let mut first = None;
        for (start, _, owner) in self.slot_ranges().await {
            if owner == port {
                first = Some(first.map_or(start, |f: u16| f.min(start)));
            }
        }
        first.unwrap_or_else(|| panic!("{port} owns no slot"))
    }

    /// Moves `slots` slots from the master at `from` to the master at `to` with
    /// `redis-cli --cluster reshard`, which takes the lowest slots of `from` first.
    pub async fn reshard(&self, from: u16, to: u16, slots: usize) {
        let id = |port: u16| async move {
            query::<String>(port, redis::cmd("CLUSTER").arg("MYID"))
                .await
                .expect("CLUSTER MYID")
        };
        let (from_id, to_id) = (id(from).await, id(to).await);
        let out = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
            .args(["--cluster-from", &from_id, "--cluster-to", &to_id])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster reshard failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A running node that does not own `key`'s slot.
    pub async fn non_owner_of(&self, key: &str) -> u16 {
        let owner = self.owner_of(key).await;
        self.live_ports()
            .into_iter()
            .find(|&p| p != owner)
            .expect("a second node")
    }

    /// Waits until `port` is a master that owns slots (a replica promoted after its master died).
    pub async fn wait_owner(&self, port: u16) {
        eventually_within(TOPOLOGY_WAIT, "the replica to be promoted", || async move {
            let owns = self.slot_ranges().await.iter().any(|r| r.2 == port);
            let info: String = query(port, redis::cmd("CLUSTER").arg("INFO")).await?;
            (owns && info_field(&info, "cluster_state") == Some("ok")).then_some(())
        })
        .await;
    }

    /// The replica of the master at `port`.
    pub async fn replica_of(&self, port: u16) -> u16 {
        for p in self.live_ports() {
            let Some(info) = info(p, "replication").await else {
                continue;
            };
            if info_field(&info, "master_port") == Some(port.to_string().as_str()) {
                return p;
            }
        }
        panic!("no replica of {port}");
    }

    /// SIGKILLs one node.
    pub fn kill(&mut self, port: u16) {
        let child = self
            .children
            .remove(&port)
            .unwrap_or_else(|| panic!("no running node on {port}"));
        kill_child(child);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in std::mem::take(&mut self.children) {
            kill_child(child);
        }
    }
}

pub const SENTINEL_MASTER: &str = "mymaster";

/// One master, one replica, and three sentinels (quorum 2) watching them.
pub struct Sentinels {
    /// The two data nodes' ports; which one is master changes with failovers.
    pub data_ports: [u16; 2],
    pub sentinel_ports: Vec<u16>,
    children: BTreeMap<u16, Child>,
    _dir: TempDir,
}

impl Sentinels {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut taken = HashSet::new();
        let mut children = BTreeMap::new();
        let data_dir = dir.path().display().to_string();
        let base = |port: u16| -> Vec<String> {
            let mut a: Vec<String> = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                .map(String::from)
                .to_vec();
            a.extend(["--port".into(), port.to_string()]);
            // A replica's full sync writes dump.rdb to its dir: keep it out of the checkout.
            a.extend(["--dir".into(), data_dir.clone()]);
            // A full sync waits 5 s by default for more replicas to share it; don't.
            a.extend(["--repl-diskless-sync-delay".into(), "0".into()]);
            a
        };

        let (master, child) = spawn_server(&mut taken, |p, _| base(p)).await;
        children.insert(master, child);
        let (replica, child) = spawn_server(&mut taken, |p, _| {
            let mut a = base(p);
            a.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
            a
        })
        .await;
        children.insert(replica, child);
        // The sentinels learn replicas from the master's INFO; have the link up before they ask.
        eventually_within(
            TOPOLOGY_WAIT,
            "the replica's link to the master",
            || async {
                let info = info(replica, "replication").await?;
                (info_field(&info, "master_link_status") == Some("up")).then_some(())
            },
        )
        .await;

        let mut sentinel_ports = Vec::new();
        for i in 0..3 {
            let d = dir.path().to_path_buf();
            let (port, child) = spawn_server(&mut taken, |port, _| {
                let conf = d.join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
                         sentinel monitor {m} 127.0.0.1 {master} 2\n\
                         sentinel down-after-milliseconds {m} 1000\n\
                         sentinel failover-timeout {m} 5000\n",
                        dir = d.display(),
                        m = SENTINEL_MASTER,
                    ),
                )
                .unwrap();
                vec![conf.display().to_string(), "--sentinel".into()]
            })
            .await;
            sentinel_ports.push(port);
            children.insert(port, child);
        }

        let s = Self {
            data_ports: [master, replica],
            sentinel_ports,
            children,
            _dir: dir,
        };
        s.wait_settled(master).await;
        s
    }

    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports.iter().copied().map(url).collect()
    }

    /// The master `sentinel` names, if it answers.
    pub async fn master_named_by(sentinel: u16) -> Option<u16> {
        let (_ip, port): (String, u16) = query(
            sentinel,
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(SENTINEL_MASTER),
        )
        .await?;
        Some(port)
    }

    /// The master port, as the first sentinel that answers names it.
    pub async fn master_port(&self) -> u16 {
        eventually_within(TOPOLOGY_WAIT, "a sentinel to name the master", || async {
            for &s in &self.sentinel_ports {
                if let Some(p) = Self::master_named_by(s).await {
                    return Some(p);
                }
            }
            None
        })
        .await
    }

    /// The data node that is not `port`.
    pub fn other(&self, port: u16) -> u16 {
        let [a, b] = self.data_ports;
        assert!(port == a || port == b, "{port} is not a data node");
        if port == a { b } else { a }
    }

    /// `SENTINEL <sub> mymaster` entries as field maps.
    async fn sentinel_list(sentinel: u16, sub: &str) -> Option<Vec<BTreeMap<String, String>>> {
        query(
            sentinel,
            redis::cmd("SENTINEL").arg(sub).arg(SENTINEL_MASTER),
        )
        .await
    }

    /// Waits until every sentinel names `master`, sees the other data node as a healthy
    /// replica, and knows the two other sentinels: then a failover can actually happen.
    pub async fn wait_settled(&self, master: u16) {
        let replica = self.other(master);
        for &s in &self.sentinel_ports {
            eventually_within(
                TOPOLOGY_WAIT,
                &format!("sentinel {s} to know master {master}, replica {replica} and its peers"),
                || async move {
                    if Self::master_named_by(s).await? != master {
                        return None;
                    }
                    let replicas = Self::sentinel_list(s, "replicas").await?;
                    let healthy = replicas.iter().any(|r| {
                        r.get("port").map(String::as_str) == Some(replica.to_string().as_str())
                            && r.get("flags").map(String::as_str) == Some("slave")
                            && r.get("master-link-status").map(String::as_str) == Some("ok")
                    });
                    let peers = Self::sentinel_list(s, "sentinels").await?;
                    (healthy && peers.len() == self.sentinel_ports.len() - 1).then_some(())
                },
            )
            .await;
        }
    }

    /// Waits until every sentinel names `port` and `port` itself says `role:master`.
    pub async fn wait_master(&self, port: u16) {
        eventually_within(
            TOPOLOGY_WAIT,
            &format!("the sentinels and {port} to agree it is master"),
            || async move {
                for &s in &self.sentinel_ports {
                    if Self::master_named_by(s).await? != port {
                        return None;
                    }
                }
                let info = info(port, "replication").await?;
                (info_field(&info, "role") == Some("master")).then_some(())
            },
        )
        .await;
    }

    /// `SENTINEL failover mymaster`; returns the new master once the sentinels name it and it
    /// says `role:master`.
    pub async fn failover(&self) -> u16 {
        let new = self.start_failover().await;
        self.wait_master(new).await;
        new
    }

    /// `SENTINEL failover mymaster`, without waiting for it; returns the master-to-be.
    pub async fn start_failover(&self) -> u16 {
        let old = self.master_port().await;
        let mut c = conn(self.sentinel_ports[0]).await;
        let _: () = redis::cmd("SENTINEL")
            .arg("failover")
            .arg(SENTINEL_MASTER)
            .query_async(&mut c)
            .await
            .expect("SENTINEL failover");
        self.other(old)
    }

    /// SIGKILLs the current master; returns its port.
    pub async fn kill_master(&mut self) -> u16 {
        let port = self.master_port().await;
        let child = self
            .children
            .remove(&port)
            .unwrap_or_else(|| panic!("master {port} is not running"));
        kill_child(child);
        port
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for (_, child) in std::mem::take(&mut self.children) {
            kill_child(child);
        }
    }
}

/// A raw RESP2 connection for `SSUBSCRIBE` (the redis crate's plain async pub/sub has no shard
/// channels without the `cluster-async` feature). It reads on a thread of its own and forwards
/// every reply and push as a [`Value`].
pub struct RawSubscriber {
    stream: TcpStream,
    rx: mpsc::UnboundedReceiver<Value>,
}

impl RawSubscriber {
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let read = stream.try_clone().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut parser = redis::Parser::new();
            let mut reader = BufReader::new(read);
            while let Ok(v) = parser.parse_value(&mut reader) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Self { stream, rx }
    }

    pub fn send(&mut self, cmd: &redis::Cmd) {
        use std::io::Write;
        self.stream.write_all(&cmd.get_packed_command()).unwrap();
    }

    /// The next reply or push, as strings (bulk strings and integers alike).
    pub async fn next(&mut self) -> Vec<String> {
        let v = tokio::time::timeout(super::WAIT, self.rx.recv())
            .await
            .expect("timed out waiting for a reply")
            .expect("connection closed");
        let items = match v {
            Value::Array(items) => items,
            Value::Push { data, .. } => data,
            other => panic!("expected an array, got {other:?}"),
        };
        items
            .into_iter()
            .map(|i| match i {
                Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                Value::SimpleString(s) => s,
                Value::Int(n) => n.to_string(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    /// Sends `SSUBSCRIBE channel` and waits for its confirmation.
    pub async fn ssubscribe(&mut self, channel: &str) {
        self.send(redis::cmd("SSUBSCRIBE").arg(channel));
        let confirm = self.next().await;
        assert_eq!(confirm[..2], ["ssubscribe", channel], "{confirm:?}");
    }
}

impl Drop for RawSubscriber {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

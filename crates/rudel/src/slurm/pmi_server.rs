//! srun's PMI-1 server: how the MPI ranks of a step find each other without mpirun.
//!
//! Every task of the step connects here over TCP (`PMI_PORT`, set by the head to this
//! node's address), introduces itself with its `PMI_ID`, puts its address into the step's
//! key-value space, waits at the barrier for all ranks, and reads the others' addresses.
//! One process holds the whole space, so a barrier is a count; at 64 nodes x 64 ranks
//! that is 4,096 connections to one srun, which Slurm avoids with a tree of slurmstepds
//! (docs/parallel-jobs.md says where this stops scaling).
//!
//! A rank that calls PMI_Abort, or that hangs up without PMI_Finalize (it crashed), takes
//! the step down: the other ranks would otherwise wait at the next barrier forever.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rudel_pmi::wire::{Message, KEYLEN_MAX, KVSNAME_MAX, MAX_LINE, VALLEN_MAX};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

/// A step's whole key-value space may hold this much: Open MPI and MPICH put a few
/// hundred bytes to a few KiB per rank, so this is room for far more ranks than one srun
/// serves, and a bound against a rank that puts without end.
const MAX_KVS_BYTES: usize = 64 << 20;

/// How long a new connection may take to say which rank it is: a connection that says
/// nothing (a port scanner, a stuck process) must not hold a slot.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The step's shape, known once the head answered (ranks may connect before srun read it).
#[derive(Debug, Clone)]
struct Layout {
    size: u32,
    /// MPICH's `PMI_process_mapping`: which ranks share a node.
    mapping: String,
}

/// Why the step must end, for srun to report and act on.
#[derive(Debug)]
pub struct Abort {
    pub rank: u32,
    pub what: String,
}

#[derive(Default)]
struct Space {
    kvs: HashMap<String, String>,
    bytes: usize,
    /// Ranks that introduced themselves (each once).
    ranks: HashSet<u32>,
    /// Ranks at the barrier, released together when all are in.
    barrier: Vec<oneshot::Sender<()>>,
}

struct Shared {
    kvsname: String,
    space: Mutex<Space>,
    layout: watch::Receiver<Option<Layout>>,
    aborts: mpsc::UnboundedSender<Abort>,
}

/// The running server; dropping it stops it (and closes every rank's connection).
pub struct PmiServer {
    port: u16,
    layout: watch::Sender<Option<Layout>>,
    aborts: mpsc::UnboundedReceiver<Abort>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PmiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PmiServer {
    /// Listens on every address of this node (the head tells ranks which one to use):
    /// IPv6 and IPv4 where the kernel has IPv6 (a node the head sees over IPv6 must be
    /// reachable there too), else IPv4 alone.
    pub async fn start(kvsname: String) -> std::io::Result<PmiServer> {
        let listener = match TcpListener::bind(("::", 0)).await {
            Ok(l) => l,
            Err(_) => TcpListener::bind(("0.0.0.0", 0)).await?,
        };
        let port = listener.local_addr()?.port();
        let (layout_tx, layout_rx) = watch::channel(None);
        let (abort_tx, aborts) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            kvsname,
            space: Mutex::new(Space::default()),
            layout: layout_rx,
            aborts: abort_tx,
        });
        let task = tokio::spawn(accept(listener, shared));
        Ok(PmiServer {
            port,
            layout: layout_tx,
            aborts,
            task,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The head laid the step out: `task_nodes[rank]` is the node of each rank.
    pub fn started(&self, task_nodes: &[String]) {
        let layout = Layout {
            size: task_nodes.len() as u32,
            mapping: process_mapping(task_nodes),
        };
        let _ = self.layout.send(Some(layout));
    }

    /// The next reason to kill the step (pending forever if none comes).
    pub async fn abort(&mut self) -> Abort {
        match self.aborts.recv().await {
            Some(a) => a,
            None => std::future::pending().await,
        }
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    // The connections end with this task: aborting it drops the JoinSet.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve(stream, shared.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::debug!("pmi accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// MPICH's `(vector,(first_node,nodes,ranks_per_node),...)` for ranks laid out in blocks.
fn process_mapping(task_nodes: &[String]) -> String {
    let mut per_node: Vec<u32> = Vec::new();
    let mut last: Option<&String> = None;
    for n in task_nodes {
        if last != Some(n) {
            per_node.push(0);
            last = Some(n);
        }
        if let Some(c) = per_node.last_mut() {
            *c += 1;
        }
    }
    let mut blocks: Vec<(usize, usize, u32)> = Vec::new();
    for (i, &c) in per_node.iter().enumerate() {
        match blocks.last_mut() {
            Some((_, n, k)) if *k == c => *n += 1,
            _ => blocks.push((i, 1, c)),
        }
    }
    let parts: Vec<String> = blocks.iter().map(|(s, n, k)| format!("({s},{n},{k})")).collect();
    format!("(vector,{})", parts.join(","))
}

/// One rank's connection: its introduction, then requests until finalize or hang-up.
async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let Ok(Ok(Some(hello))) = tokio::time::timeout(HELLO_TIMEOUT, read(&mut rd)).await else {
        return;
    };
    let Some(layout) = wait_layout(&shared).await else {
        return;
    };
    let Some(rank) = introduce(&shared, &hello, &layout) else {
        let _ = wr
            .write_all(Message::new("initack").with("rc", -1).to_line().as_bytes())
            .await;
        return;
    };
    let intro = [
        Message::new("initack").with("rc", 0),
        Message::new("set").with("size", layout.size),
        Message::new("set").with("rank", rank),
        Message::new("set").with("debug", 0),
    ];
    let intro: String = intro.iter().map(Message::to_line).collect();
    if wr.write_all(intro.as_bytes()).await.is_err() {
        return lost(&shared, rank);
    }
    loop {
        let m = match read(&mut rd).await {
            Ok(Some(m)) => m,
            _ => return lost(&shared, rank),
        };
        let reply = match m.cmd.as_str() {
            "barrier_in" => barrier(&shared, &layout).await,
            "finalize" => {
                let _ = wr
                    .write_all(Message::new("finalize_ack").with("rc", 0).to_line().as_bytes())
                    .await;
                return;
            }
            "abort" => {
                let code = m.get("exitcode").unwrap_or("1");
                let msg = m.get("msg").map(|s| s.replace('_', " ")).unwrap_or_default();
                let what = format!("called PMI_Abort (exit code {code}) {msg}");
                let _ = shared.aborts.send(Abort {
                    rank,
                    what: what.trim_end().to_string(),
                });
                return;
            }
            _ => Some(answer(&shared, &layout, &m)),
        };
        let Some(reply) = reply else { return };
        if wr.write_all(reply.to_line().as_bytes()).await.is_err() {
            return lost(&shared, rank);
        }
    }
}

/// Reads one message; None at the end of the stream. A line too long or not PMI ends it.
async fn read(rd: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> std::io::Result<Option<Message>> {
    let mut line = String::new();
    let n = rd.take(MAX_LINE as u64 + 1).read_line(&mut line).await?;
    if n == 0 {
        return Ok(None);
    }
    Message::parse(&line)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

async fn wait_layout(shared: &Shared) -> Option<Layout> {
    let mut rx = shared.layout.clone();
    let l = rx.wait_for(Option::is_some).await.ok()?;
    l.clone()
}

/// The rank a connection claims (`initack pmiid=N`), if it is one of the step's and not
/// yet taken: a second connection for a rank is a stray or hostile process.
fn introduce(shared: &Shared, hello: &Message, layout: &Layout) -> Option<u32> {
    if hello.cmd != "initack" {
        return None;
    }
    let rank: u32 = hello.get("pmiid")?.parse().ok()?;
    let mut space = shared.space.lock().ok()?;
    (rank < layout.size && space.ranks.insert(rank)).then_some(rank)
}

/// A rank hung up without finalize: it died, and the others must not wait for it.
fn lost(shared: &Shared, rank: u32) {
    let what = "ended its connection to PMI without PMI_Finalize (it died)".to_string();
    let _ = shared.aborts.send(Abort { rank, what });
}

/// Enters the barrier; answers when every rank is in. None if the server is going away.
async fn barrier(shared: &Shared, layout: &Layout) -> Option<Message> {
    let (tx, rx) = oneshot::channel();
    {
        let mut space = shared.space.lock().ok()?;
        space.barrier.push(tx);
        if space.barrier.len() as u32 >= layout.size {
            for w in space.barrier.drain(..) {
                let _ = w.send(());
            }
        }
    }
    rx.await.ok()?;
    Some(Message::new("barrier_out").with("rc", 0))
}

/// The answer to every request but the barrier, finalize and abort.
fn answer(shared: &Shared, layout: &Layout, m: &Message) -> Message {
    match m.cmd.as_str() {
        "init" => Message::new("response_to_init")
            .with("pmi_version", 1)
            .with("pmi_subversion", 1)
            .with("rc", 0),
        "get_maxes" => Message::new("maxes")
            .with("kvsname_max", KVSNAME_MAX)
            .with("keylen_max", KEYLEN_MAX)
            .with("vallen_max", VALLEN_MAX)
            .with("rc", 0),
        "get_appnum" => Message::new("appnum").with("appnum", 0).with("rc", 0),
        "get_universe_size" => Message::new("universe_size").with("size", layout.size).with("rc", 0),
        "get_my_kvsname" => Message::new("my_kvsname")
            .with("kvsname", &shared.kvsname)
            .with("rc", 0),
        "put" => put(shared, m),
        "get" => get(shared, layout, m),
        other => Message::new(&format!("{other}_result"))
            .with("rc", -1)
            .with("msg", format!("rudel_does_not_serve_{other}")),
    }
}

fn put(shared: &Shared, m: &Message) -> Message {
    let fail = |msg: &str| Message::new("put_result").with("rc", -1).with("msg", msg);
    let (Some(key), Some(value)) = (m.get("key"), m.get("value")) else {
        return fail("put_needs_key_and_value");
    };
    if key.len() > KEYLEN_MAX || value.len() > VALLEN_MAX {
        return fail("key_or_value_too_long");
    }
    let Ok(mut space) = shared.space.lock() else {
        return fail("server_error");
    };
    let old = space.kvs.get(key).map_or(0, |v| key.len() + v.len());
    let bytes = space.bytes - old + key.len() + value.len();
    if bytes > MAX_KVS_BYTES {
        return fail("key_value_space_full");
    }
    space.bytes = bytes;
    space.kvs.insert(key.to_string(), value.to_string());
    Message::new("put_result").with("rc", 0).with("msg", "success")
}

fn get(shared: &Shared, layout: &Layout, m: &Message) -> Message {
    let key = m.get("key").unwrap_or_default();
    let value = if key == "PMI_process_mapping" {
        Some(layout.mapping.clone())
    } else {
        shared.space.lock().ok().and_then(|s| s.kvs.get(key).cloned())
    };
    match value {
        Some(v) => Message::new("get_result")
            .with("rc", 0)
            .with("msg", "success")
            .with("value", v),
        None => Message::new("get_result").with("rc", -1).with("msg", "key_not_found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    /// Three ranks through the real client library: put, barrier, get of each other's
    /// values (with spaces, as Open MPI's), the process mapping; a fourth connection for a
    /// taken rank is turned away; a rank that hangs up without finalize aborts the step.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ranks_exchange_values_at_the_barrier_and_a_dead_rank_aborts_the_step() {
        use rudel_pmi::client::Client;
        let server = PmiServer::start("kvs-1".into()).await.unwrap();
        let addr = format!("127.0.0.1:{}", server.port());
        server.started(&nodes("a a b"));
        let ranks: Vec<_> = (0..3)
            .map(|r| {
                let addr = addr.clone();
                std::thread::spawn(move || {
                    let mut c = Client::connect(&addr, r).unwrap();
                    assert_eq!((c.rank, c.size, c.kvsname.as_str()), (r, 3, "kvs-1"));
                    c.put(&format!("card-{r}"), &format!("host {r} port=1")).unwrap();
                    c.barrier().unwrap();
                    let all: Vec<String> = (0..3).map(|o| c.get(&format!("card-{o}")).unwrap().unwrap()).collect();
                    let mapping = c.get("PMI_process_mapping").unwrap();
                    assert_eq!(c.get("nothing").unwrap(), None);
                    c.finalize().unwrap();
                    (all, mapping)
                })
            })
            .collect();
        for t in ranks {
            let (all, mapping) = tokio::task::spawn_blocking(move || t.join().unwrap()).await.unwrap();
            assert_eq!(all, vec!["host 0 port=1", "host 1 port=1", "host 2 port=1"]);
            assert_eq!(mapping.as_deref(), Some("(vector,(0,1,2),(1,1,1))"));
        }
        let again = addr.clone();
        let taken = tokio::task::spawn_blocking(move || Client::connect(&again, 1).is_err())
            .await
            .unwrap();
        assert!(taken, "rank 1 is taken: a second connection for it is refused");
        // A fresh step where rank 0 dies (drops its connection) without finalize.
        let mut server = PmiServer::start("kvs-2".into()).await.unwrap();
        server.started(&nodes("a"));
        let addr = format!("127.0.0.1:{}", server.port());
        tokio::task::spawn_blocking(move || drop(Client::connect(&addr, 0).unwrap()))
            .await
            .unwrap();
        let a = tokio::time::timeout(Duration::from_secs(10), server.abort())
            .await
            .unwrap();
        assert_eq!(a.rank, 0);
        assert!(a.what.contains("without PMI_Finalize"), "{}", a.what);
    }

    #[test]
    fn process_mapping_groups_equal_nodes_into_blocks() {
        assert_eq!(process_mapping(&nodes("a a b b c c")), "(vector,(0,3,2))");
        assert_eq!(process_mapping(&nodes("a a a b b b c c")), "(vector,(0,2,3),(2,1,2))");
        assert_eq!(process_mapping(&nodes("a")), "(vector,(0,1,1))");
    }
}

//! Multi-node allocations (issue 11): what a job asks for (`-N`, `-n`,
//! `--ntasks-per-node`, `--exclusive`, `--nodelist`, `--exclude`) and what it was granted,
//! one slice (cores and memory) per node. The batch script is the job's one task; it runs
//! on the first slice's node and holds every slice until it ends, all or nothing: a job
//! never holds part of its nodes, so two big jobs cannot each hold half of what the other
//! needs and wait forever.
use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

/// What a job asks for beyond one task on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocSpec {
    /// Nodes, at least (`-N MIN[-MAX]`).
    pub nodes_min: u32,
    /// Nodes, at most: as many as are free now up to this are taken, as in Slurm.
    pub nodes_max: u32,
    /// `-N` was given: spread over as many nodes as allowed; without it tasks are packed
    /// onto as few nodes as hold them.
    #[serde(default)]
    pub nodes_given: bool,
    /// Tasks in the allocation (`-n`); `None`: one per node, or `ntasks_per_node` each.
    #[serde(default)]
    pub ntasks: Option<u32>,
    #[serde(default)]
    pub ntasks_per_node: Option<u32>,
    /// Whole nodes: every cpu of each node is granted, nothing else shares them.
    #[serde(default)]
    pub exclusive: bool,
    /// Nodes the allocation must include (`-w`), expanded.
    #[serde(default)]
    pub nodelist: Vec<String>,
    /// Nodes it must not use (`-x`), expanded.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `--mem-per-cpu` (bytes): a slice gets it times its cpus; the job's `mem_bytes` is
    /// then 0. Otherwise the job's `mem_bytes` is per node, as Slurm's `--mem`.
    #[serde(default)]
    pub mem_per_cpu: u64,
}

/// Why an allocation request is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("{0}: expected a positive number")]
    Number(String),
    #[error("--nodes {0}: expected N or MIN-MAX with 1 <= MIN <= MAX")]
    Nodes(String),
    #[error("unknown allocation field {0:?}")]
    Field(String),
    #[error("{0}")]
    Inconsistent(String),
    #[error(transparent)]
    Hostlist(#[from] crate::hostlist::HostlistError),
}

impl AllocSpec {
    /// True when the request is more than one task on one node, or asks for whole nodes
    /// or named nodes (a plain job needs no allocation).
    pub fn is_parallel(&self) -> bool {
        self.nodes_max > 1
            || self.ntasks.is_some_and(|n| n > 1)
            || self.ntasks_per_node.is_some_and(|n| n > 1)
            || self.exclusive
            || !self.nodelist.is_empty()
            || !self.exclude.is_empty()
    }

    /// Checks the numbers agree with each other (Slurm's own refusals).
    pub fn validate(&self) -> Result<(), AllocError> {
        if self.nodes_min == 0 || self.nodes_min > self.nodes_max {
            return Err(AllocError::Nodes(format!("{}-{}", self.nodes_min, self.nodes_max)));
        }
        if let Some(n) = self.ntasks {
            if n < self.nodes_min {
                return Err(AllocError::Inconsistent(format!(
                    "--ntasks {n} is fewer than --nodes {}: every node runs at least one task",
                    self.nodes_min
                )));
            }
        }
        if self.nodelist.len() as u32 > self.nodes_max {
            return Err(AllocError::Inconsistent(format!(
                "--nodelist names {} nodes, more than --nodes allows ({})",
                self.nodelist.len(),
                self.nodes_max
            )));
        }
        if let Some(n) = self.nodelist.iter().find(|n| self.exclude.contains(n)) {
            return Err(AllocError::Inconsistent(format!(
                "node {n} is both required and excluded"
            )));
        }
        Ok(())
    }

    /// The request in the text form carried by the client API: `nodes=2-4;ntasks=8;
    /// ntasks-per-node=2;exclusive;nodelist=a,b;exclude=c;mem-per-cpu=BYTES`.
    pub fn to_text(&self) -> String {
        let mut f = vec![format!("nodes={}-{}", self.nodes_min, self.nodes_max)];
        if self.nodes_given {
            f.push("nodes-given".into());
        }
        if let Some(n) = self.ntasks {
            f.push(format!("ntasks={n}"));
        }
        if let Some(n) = self.ntasks_per_node {
            f.push(format!("ntasks-per-node={n}"));
        }
        if self.exclusive {
            f.push("exclusive".into());
        }
        if !self.nodelist.is_empty() {
            f.push(format!("nodelist={}", self.nodelist.join(",")));
        }
        if !self.exclude.is_empty() {
            f.push(format!("exclude={}", self.exclude.join(",")));
        }
        if self.mem_per_cpu > 0 {
            f.push(format!("mem-per-cpu={}", self.mem_per_cpu));
        }
        f.join(";")
    }

    /// Parses [`AllocSpec::to_text`]'s form (empty text: no allocation).
    pub fn parse_text(s: &str) -> Result<Option<AllocSpec>, AllocError> {
        if s.trim().is_empty() {
            return Ok(None);
        }
        let mut a = AllocSpec {
            nodes_min: 1,
            nodes_max: 1,
            ..AllocSpec::default()
        };
        for field in s.split(';').map(str::trim).filter(|f| !f.is_empty()) {
            let (k, v) = field.split_once('=').unwrap_or((field, ""));
            match k {
                "nodes" => (a.nodes_min, a.nodes_max) = parse_nodes(v)?,
                "nodes-given" => a.nodes_given = true,
                "ntasks" => a.ntasks = Some(positive(v)?),
                "ntasks-per-node" => a.ntasks_per_node = Some(positive(v)?),
                "exclusive" => a.exclusive = true,
                "nodelist" => a.nodelist = crate::hostlist::expand(v)?,
                "exclude" => a.exclude = crate::hostlist::expand(v)?,
                "mem-per-cpu" => a.mem_per_cpu = v.parse().map_err(|_| AllocError::Number(field.into()))?,
                _ => return Err(AllocError::Field(k.to_string())),
            }
        }
        a.validate()?;
        Ok(Some(a))
    }
}

/// `N` or `MIN-MAX`, Slurm's `--nodes` forms.
pub fn parse_nodes(v: &str) -> Result<(u32, u32), AllocError> {
    let bad = || AllocError::Nodes(v.to_string());
    let (lo, hi) = match v.trim().split_once('-') {
        Some((a, b)) => (
            a.trim().parse::<u32>().map_err(|_| bad())?,
            b.trim().parse::<u32>().map_err(|_| bad())?,
        ),
        None => {
            let n = v.trim().parse::<u32>().map_err(|_| bad())?;
            (n, n)
        }
    };
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// A positive count.
pub fn positive(v: &str) -> Result<u32, AllocError> {
    v.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| AllocError::Number(v.to_string()))
}

/// One node's part of an allocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    pub node: NodeId,
    /// The node's name, kept so the environment and displays need no lookup.
    pub name: String,
    /// Tasks this node runs (`SLURM_TASKS_PER_NODE`).
    pub tasks: u32,
    pub cores: Vec<u32>,
    pub mem_bytes: u64,
}

/// Every slice a running job holds; the first is where its batch script runs (and equals
/// the task's own cores and memory).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub slices: Vec<Slice>,
}

impl Allocation {
    pub fn ntasks(&self) -> u32 {
        self.slices.iter().map(|s| s.tasks).sum()
    }

    pub fn names(&self) -> Vec<String> {
        self.slices.iter().map(|s| s.name.clone()).collect()
    }

    /// Slurm's compressed hostlist of the nodes (`n[1-3]`).
    pub fn nodelist(&self) -> String {
        crate::hostlist::compress(&self.names())
    }

    /// `SLURM_TASKS_PER_NODE`'s form: `2(x3),1`.
    pub fn tasks_per_node(&self) -> String {
        repeat_counts(self.slices.iter().map(|s| s.tasks))
    }

    /// `SLURM_JOB_CPUS_PER_NODE`'s form: `4(x2)`.
    pub fn cpus_per_node(&self) -> String {
        repeat_counts(self.slices.iter().map(|s| s.cores.len() as u32))
    }

    /// `name:cpus,...` in slice order, for `RUDEL_ALLOCATION` (and the coming `srun`).
    pub fn text(&self) -> String {
        let parts: Vec<String> = self
            .slices
            .iter()
            .map(|s| format!("{}:{}:{}", s.name, s.tasks, s.cores.len()))
            .collect();
        parts.join(",")
    }

    /// An Open MPI hostfile: `host slots=N`, one line per node.
    pub fn hostfile(&self) -> String {
        self.slices
            .iter()
            .map(|s| format!("{} slots={}\n", s.name, s.tasks))
            .collect()
    }
}

/// What a multi-node job's script sees of its allocation (over the one-node values of
/// `task_env.rs`), in Slurm's formats, plus rudel's own: `RUDEL_NODES` (names, comma
/// separated), `RUDEL_ALLOCATION` ([`Allocation::text`]; the agent writes the hostfile
/// `RUDEL_HOSTFILE` from it).
pub fn env_vars(job: &crate::job::Job, a: &Allocation) -> Vec<(String, String)> {
    let nodes = a.slices.len().to_string();
    let ntasks = a.ntasks().to_string();
    let first_cpus = a.slices.first().map_or(0, |s| s.cores.len()).to_string();
    let mut v: Vec<(&str, String)> = vec![
        ("SLURM_JOB_NODELIST", a.nodelist()),
        ("SLURM_NODELIST", a.nodelist()),
        ("SLURM_NNODES", nodes.clone()),
        ("SLURM_JOB_NUM_NODES", nodes),
        ("SLURM_NTASKS", ntasks.clone()),
        ("SLURM_NPROCS", ntasks),
        ("SLURM_TASKS_PER_NODE", a.tasks_per_node()),
        ("SLURM_JOB_CPUS_PER_NODE", a.cpus_per_node()),
        ("SLURM_CPUS_ON_NODE", first_cpus.clone()),
        ("RUDEL_CPUS", first_cpus),
        ("RUDEL_NODES", a.names().join(",")),
        ("RUDEL_ALLOCATION", a.text()),
    ];
    if let Some(t) = job.spec.alloc.as_ref().and_then(|s| s.ntasks_per_node) {
        v.push(("SLURM_NTASKS_PER_NODE", t.to_string()));
    }
    v.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The Open MPI hostfile for a `RUDEL_ALLOCATION` text (`name:tasks:cpus,...`): `name
/// slots=tasks` per line; `None` if the text is malformed.
pub fn hostfile_from_text(text: &str) -> Option<String> {
    let mut out = String::new();
    for part in text.split(',') {
        let mut f = part.split(':');
        let (name, tasks) = (f.next()?, f.next()?.parse::<u32>().ok()?);
        if name.is_empty() {
            return None;
        }
        out.push_str(&format!("{name} slots={tasks}\n"));
    }
    Some(out)
}

/// Slurm's run-length form of per-node counts: equal neighbours as `N(xK)`.
pub fn repeat_counts(counts: impl Iterator<Item = u32>) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for c in counts {
        match runs.last_mut() {
            Some((v, k)) if *v == c => *k += 1,
            _ => runs.push((c, 1)),
        }
    }
    let parts: Vec<String> = runs
        .into_iter()
        .map(|(v, k)| if k == 1 { v.to_string() } else { format!("{v}(x{k})") })
        .collect();
    parts.join(",")
}

/// How many tasks each chosen node runs: from candidates `(node, tasks it can take now)`
/// in order of preference (required nodes first), the nodes and their task counts, or
/// `None` when the request cannot be met now. Pure, so the planner's choice is the same
/// on every replica.
pub fn distribute(a: &AllocSpec, required: usize, caps: &[(NodeId, u32)]) -> Option<Vec<(NodeId, u32)>> {
    let tpn = a.ntasks_per_node;
    let usable = |&(_, c): &(NodeId, u32)| c >= tpn.unwrap_or(1);
    // Every required node must be usable now, or the request waits.
    if required > caps.len() || !caps[..required].iter().all(usable) {
        return None;
    }
    let caps: Vec<(NodeId, u32)> = caps
        .iter()
        .filter(|c| usable(c))
        .map(|&(n, c)| (n, tpn.map_or(c, |t| c.min(t))))
        .collect();
    if caps.len() < required.max(a.nodes_min as usize) {
        return None;
    }
    match a.ntasks {
        None => {
            let each = tpn.unwrap_or(1);
            let k = caps.len().min(a.nodes_max as usize);
            let mut out: Vec<(NodeId, u32)> = caps[..k].iter().map(|&(n, _)| (n, each)).collect();
            out.sort_by_key(|&(id, _)| id);
            Some(out)
        }
        Some(n) if a.nodes_given => spread(a, required, &caps, n),
        Some(n) => pack(a, required, &caps, n),
    }
}

/// `-N` given: as many nodes as allowed and free, tasks as even as possible (the first
/// nodes get one more), fewer nodes if the even shares do not fit.
fn spread(a: &AllocSpec, required: usize, caps: &[(NodeId, u32)], n: u32) -> Option<Vec<(NodeId, u32)>> {
    let kmax = caps.len().min(a.nodes_max as usize).min(n as usize);
    let kmin = (a.nodes_min as usize).max(required).max(1);
    for k in (kmin..=kmax).rev() {
        // Required nodes first, then the roomiest of the rest.
        let mut chosen: Vec<(NodeId, u32)> = caps[..required].to_vec();
        let mut rest: Vec<(NodeId, u32)> = caps[required..].to_vec();
        rest.sort_by_key(|&(id, c)| (std::cmp::Reverse(c), id));
        chosen.extend(rest.into_iter().take(k - required));
        chosen.sort_by_key(|&(id, c)| (std::cmp::Reverse(c), id));
        let (base, extra) = (n / k as u32, n % k as u32);
        let shares: Vec<(NodeId, u32)> = chosen
            .iter()
            .enumerate()
            .map(|(i, &(id, _))| (id, base + u32::from((i as u32) < extra)))
            .collect();
        if shares.iter().zip(&chosen).all(|(s, c)| s.1 <= c.1) {
            let mut out = shares;
            out.sort_by_key(|&(id, _)| id);
            return Some(out);
        }
    }
    None
}

/// Only `-n`: pack tasks onto as few nodes as hold them, required nodes first.
fn pack(a: &AllocSpec, required: usize, caps: &[(NodeId, u32)], n: u32) -> Option<Vec<(NodeId, u32)>> {
    let mut order: Vec<(NodeId, u32)> = caps[..required].to_vec();
    let mut rest: Vec<(NodeId, u32)> = caps[required..].to_vec();
    rest.sort_by_key(|&(id, c)| (std::cmp::Reverse(c), id));
    order.extend(rest);
    let mut left = n;
    let mut out = Vec::new();
    for (i, (id, cap)) in order.into_iter().enumerate() {
        if left == 0 && i >= required {
            break;
        }
        // A required node runs at least one task even if the others could hold them all.
        let take = cap.min(left).max(u32::from(i < required));
        if take == 0 || take > cap {
            return None;
        }
        out.push((id, take));
        left = left.saturating_sub(take);
    }
    let k = out.len() as u32;
    (left == 0 && k >= a.nodes_min && k <= a.nodes_max && out.iter().map(|o| o.1).sum::<u32>() == n).then(|| {
        out.sort_by_key(|&(id, _)| id);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> AllocSpec {
        AllocSpec::parse_text(text).unwrap().unwrap()
    }

    fn slices(counts: &[(u32, u32)]) -> Allocation {
        Allocation {
            slices: counts
                .iter()
                .enumerate()
                .map(|(i, &(tasks, cpus))| Slice {
                    node: i as NodeId,
                    name: format!("n{}", i + 1),
                    tasks,
                    cores: (0..cpus).collect(),
                    mem_bytes: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn text_round_trips_and_bad_requests_are_refused() {
        let a = spec("nodes=2-4;nodes-given;ntasks=8;ntasks-per-node=2;exclusive;nodelist=n[1-2];exclude=n9");
        assert_eq!(a.nodelist, ["n1", "n2"]);
        assert_eq!(AllocSpec::parse_text(&a.to_text()).unwrap(), Some(a));
        assert_eq!(AllocSpec::parse_text("").unwrap(), None);
        assert!(AllocSpec::parse_text("nodes=3-2").is_err());
        assert!(
            AllocSpec::parse_text("nodes=3;ntasks=2").is_err(),
            "fewer tasks than nodes"
        );
        assert!(AllocSpec::parse_text("nodes=2;nodelist=a;exclude=a").is_err());
        assert!(AllocSpec::parse_text("bogus=1").is_err());
        assert_eq!(parse_nodes("2-5"), Ok((2, 5)));
        assert!(parse_nodes("0").is_err());
    }

    #[test]
    fn slurm_forms_of_per_node_counts() {
        let a = slices(&[(2, 2), (2, 2), (2, 2)]);
        assert_eq!(a.tasks_per_node(), "2(x3)");
        assert_eq!(a.nodelist(), "n[1-3]");
        assert_eq!(a.ntasks(), 6);
        let b = slices(&[(2, 4), (1, 4), (1, 2)]);
        assert_eq!(b.tasks_per_node(), "2,1(x2)");
        assert_eq!(b.cpus_per_node(), "4(x2),2");
        assert_eq!(b.hostfile(), "n1 slots=2\nn2 slots=1\nn3 slots=1\n");
        assert_eq!(b.text(), "n1:2:4,n2:1:4,n3:1:2");
        assert_eq!(hostfile_from_text(&b.text()).as_deref(), Some(b.hostfile().as_str()));
        assert_eq!(hostfile_from_text("n1"), None);
    }

    #[test]
    fn spread_pack_and_per_node_counts() {
        let caps = [(0, 4), (1, 4), (2, 4)];
        assert_eq!(
            distribute(&spec("nodes=3;nodes-given;ntasks=6"), 0, &caps),
            Some(vec![(0, 2), (1, 2), (2, 2)])
        );
        assert_eq!(
            distribute(&spec("nodes=2;nodes-given;ntasks=3"), 0, &caps),
            Some(vec![(0, 2), (1, 1)])
        );
        assert_eq!(
            distribute(&spec("nodes=2;nodes-given;ntasks-per-node=2"), 0, &caps),
            Some(vec![(0, 2), (1, 2)])
        );
        // -N 1-3 takes as many nodes as are free.
        assert_eq!(
            distribute(&spec("nodes=1-3;nodes-given"), 0, &caps[..2]).map(|v| v.len()),
            Some(2)
        );
        // -n 6 alone packs onto two nodes.
        assert_eq!(
            distribute(&spec("nodes=1-6;ntasks=6"), 0, &caps),
            Some(vec![(0, 4), (1, 2)])
        );
        // Not enough room now: nothing, never part.
        assert_eq!(distribute(&spec("nodes=3;nodes-given;ntasks=6"), 0, &caps[..2]), None);
        assert_eq!(distribute(&spec("nodes=2;nodes-given;ntasks=9"), 0, &caps), None);
        // A required node is kept even when others are roomier.
        let caps = [(2, 1), (0, 4), (1, 4)];
        assert_eq!(
            distribute(&spec("nodes=1-4;ntasks=3;nodelist=x"), 1, &caps),
            Some(vec![(0, 2), (2, 1)])
        );
    }
}

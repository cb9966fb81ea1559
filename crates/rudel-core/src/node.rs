//! Compute nodes as the state machine sees them: resources, allocations, liveness.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::TaskKey;
use crate::resources::{choose_pools, could_ever_serve, GresGrant, GresPool, GresRequest};

/// Whether a node can take work.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Liveness {
    /// Its agent is connected.
    Up,
    /// Its agent's session ended; its tasks keep running until it returns or is declared lost.
    Disconnected,
    /// Declared lost (missed heartbeats); its tasks were given up.
    Down,
}

/// One compute node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub uid: String,
    pub boot_id: String,
    pub cpus: u32,
    pub mem_bytes: u64,
    pub mem_enforcement: String,
    /// How the agent contains tasks, e.g. `cgroup-v1 (pids.max 1024, memory)`.
    #[serde(default)]
    pub containment: String,
    /// Whom the agent runs tasks as (`job-user`, `agent-user:NAME`).
    #[serde(default)]
    pub run_as: String,
    pub version: String,
    pub arch: String,
    pub os: String,
    pub address: String,
    pub liveness: Liveness,
    pub last_seen_ms: u64,
    /// Incremented on every registration: fences a late "node lost" against a new session.
    #[serde(default)]
    pub epoch: u64,
    /// Why the node is down, if it is.
    #[serde(default)]
    pub down_reason: String,
    /// Set while the node is drained: no new work is placed on it. Holds the reason.
    #[serde(default)]
    pub drain: Option<String>,
    /// Labels for constraint expressions.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `free_cores[c]` is true when core `c` is not allocated.
    pub free_cores: Vec<bool>,
    pub cpus_used: u32,
    pub mem_used: u64,
    /// Tasks holding resources here, with their attempt.
    #[serde(with = "crate::serde_pairs")]
    pub running: BTreeMap<TaskKey, u32>,
    /// Generic resources (GPUs, ...) by pool name (`gpu`, `gpu:a100`).
    #[serde(default)]
    pub gres: BTreeMap<String, GresPool>,
    /// Multi-node jobs holding a slice here while their task runs on another node, with
    /// the attempt. Apart from `running`, which lists what this node's agent runs.
    #[serde(default, with = "crate::serde_pairs")]
    pub slices: BTreeMap<TaskKey, u32>,
}

impl Node {
    /// A node as registered, with nothing allocated.
    pub fn new(name: String, cpus: u32, mem_bytes: u64) -> Node {
        Node {
            name,
            uid: String::new(),
            boot_id: String::new(),
            cpus,
            mem_bytes,
            mem_enforcement: String::new(),
            containment: String::new(),
            run_as: String::new(),
            version: String::new(),
            arch: String::new(),
            os: String::new(),
            address: String::new(),
            liveness: Liveness::Up,
            last_seen_ms: 0,
            epoch: 0,
            down_reason: String::new(),
            drain: None,
            labels: BTreeMap::new(),
            free_cores: vec![true; cpus as usize],
            cpus_used: 0,
            mem_used: 0,
            running: BTreeMap::new(),
            gres: BTreeMap::new(),
            slices: BTreeMap::new(),
        }
    }

    /// Cpus not allocated.
    pub fn cpus_free(&self) -> u32 {
        self.cpus.saturating_sub(self.cpus_used)
    }

    /// Memory not reserved.
    pub fn mem_free(&self) -> u64 {
        self.mem_bytes.saturating_sub(self.mem_used)
    }

    /// True when a task of this size fits right now.
    pub fn fits_now(&self, cpus: u32, mem: u64) -> bool {
        self.takes_work() && self.cpus_free() >= cpus && self.mem_free() >= mem
    }

    /// Up and not drained: new work may be placed here.
    pub fn takes_work(&self) -> bool {
        self.liveness == Liveness::Up && self.drain.is_none()
    }

    /// True when the node satisfies a job's constraint (or the job has none).
    pub fn matches(&self, c: Option<&crate::constraint::Constraint>) -> bool {
        c.is_none_or(|c| {
            c.matches(&crate::constraint::NodeFacts {
                name: &self.name,
                cpus: self.cpus,
                mem_bytes: self.mem_bytes,
                arch: &self.arch,
                os: &self.os,
                labels: &self.labels,
            })
        })
    }

    /// True when a task of this size could ever fit on this node.
    pub fn could_ever_fit(&self, cpus: u32, mem: u64) -> bool {
        self.cpus >= cpus && self.mem_bytes >= mem
    }

    /// Takes `cpus` free cores (lowest numbers first) and `mem` bytes; `None` if they
    /// do not fit, in which case nothing changes.
    pub fn allocate(&mut self, key: TaskKey, attempt: u32, cpus: u32, mem: u64) -> Option<Vec<u32>> {
        if !self.fits_now(cpus, mem) {
            return None;
        }
        let cores = take_free(&mut self.free_cores, cpus)?;
        self.cpus_used += cpus;
        self.mem_used += mem;
        self.running.insert(key, attempt);
        Some(cores)
    }

    /// True when the node's pools could ever serve the request.
    pub fn could_ever_serve(&self, req: &GresRequest) -> bool {
        req.iter()
            .all(|(want, units)| could_ever_serve(&self.gres, want, *units))
    }

    /// Takes cores and memory (as [`Node::allocate`]) and units of generic resources, all
    /// or nothing.
    pub fn allocate_with_gres(
        &mut self,
        key: TaskKey,
        attempt: u32,
        cpus: u32,
        mem: u64,
        req: &GresRequest,
    ) -> Option<(Vec<u32>, GresGrant)> {
        let chosen = choose_pools(&self.gres, req, |_| 0)?;
        let cores = self.allocate(key, attempt, cpus, mem)?;
        let mut grant = GresGrant::new();
        for (pool, units) in chosen {
            // `choose_pools` saw enough free units, so this takes them.
            let Some(idx) = self.gres.get_mut(&pool).and_then(|p| take_free(&mut p.free, units)) else {
                continue;
            };
            grant.push((pool, idx));
        }
        Some((cores, grant))
    }

    /// Returns a task's units of generic resources.
    pub fn release_gres(&mut self, grant: &GresGrant) {
        for (pool, units) in grant {
            if let Some(p) = self.gres.get_mut(pool) {
                for &i in units {
                    if let Some(slot) = p.free.get_mut(i as usize) {
                        *slot = true;
                    }
                }
            }
        }
    }

    /// Sets the pools a (re)registering agent declares, keeping units in use.
    pub fn set_gres(&mut self, declared: &BTreeMap<String, u32>) {
        self.gres
            .retain(|name, p| declared.contains_key(name) || p.free.iter().any(|f| !*f));
        for (name, units) in declared {
            self.gres.entry(name.clone()).or_default().resize(*units);
        }
        for (name, p) in self.gres.iter_mut() {
            if !declared.contains_key(name) {
                p.resize(0);
            }
        }
    }

    /// Returns a task's cores and memory.
    pub fn release(&mut self, key: TaskKey, cores: &[u32], mem: u64) {
        if self.running.remove(&key).is_none() {
            return;
        }
        self.free(cores, mem);
    }

    /// Takes a slice of a multi-node job whose task runs elsewhere (see
    /// [`Node::allocate`]); `None`, with nothing changed, if it does not fit.
    pub fn allocate_slice(&mut self, key: TaskKey, attempt: u32, cpus: u32, mem: u64) -> Option<Vec<u32>> {
        if !self.fits_now(cpus, mem) {
            return None;
        }
        let cores = take_free(&mut self.free_cores, cpus)?;
        self.cpus_used += cpus;
        self.mem_used += mem;
        self.slices.insert(key, attempt);
        Some(cores)
    }

    /// Returns a slice taken by [`Node::allocate_slice`].
    pub fn release_slice(&mut self, key: TaskKey, cores: &[u32], mem: u64) {
        if self.slices.remove(&key).is_none() {
            return;
        }
        self.free(cores, mem);
    }

    fn free(&mut self, cores: &[u32], mem: u64) {
        for c in cores {
            if let Some(slot) = self.free_cores.get_mut(*c as usize) {
                if !*slot {
                    *slot = true;
                    self.cpus_used = self.cpus_used.saturating_sub(1);
                }
            }
        }
        self.mem_used = self.mem_used.saturating_sub(mem);
    }

    /// Records a successor queued on this node; it uses its predecessor's resources.
    pub fn add_successor(&mut self, key: TaskKey, attempt: u32) {
        self.running.insert(key, attempt);
    }

    /// Drops a task from the node without freeing resources (they pass to a successor, or
    /// still belong to the predecessor the task was queued behind).
    pub fn forget(&mut self, key: TaskKey) {
        self.running.remove(&key);
    }

    /// Changes the node's size, keeping current allocations (a shrunk node may be
    /// temporarily full until its tasks end).
    pub fn resize(&mut self, cpus: u32, mem_bytes: u64) {
        let want = cpus as usize;
        if self.free_cores.len() < want {
            self.free_cores.resize(want, true);
        } else {
            // Drop free cores beyond the new size; allocated ones stay until released.
            while self.free_cores.len() > want && self.free_cores.last() == Some(&true) {
                self.free_cores.pop();
            }
        }
        self.cpus = cpus;
        self.mem_bytes = mem_bytes;
    }

    /// The state users see.
    pub fn display_state(&self) -> &'static str {
        match self.liveness {
            // Session gone, tasks still held until the node timeout declares it lost.
            Liveness::Disconnected => "unreachable",
            Liveness::Down => "down",
            Liveness::Up if self.drain.is_some() && self.running.is_empty() && self.slices.is_empty() => "drained",
            Liveness::Up if self.drain.is_some() => "draining",
            Liveness::Up if self.cpus_used == 0 && self.running.is_empty() => "idle",
            Liveness::Up if self.cpus_used >= self.cpus => "allocated",
            Liveness::Up => "mixed",
        }
    }
}

/// Marks the `n` lowest free slots taken and returns their indices; `None`, with nothing
/// changed, if fewer than `n` are free. Cores and units of generic resources alike.
fn take_free(slots: &mut [bool], n: u32) -> Option<Vec<u32>> {
    let idx: Vec<u32> = slots
        .iter()
        .enumerate()
        .filter(|(_, free)| **free)
        .map(|(i, _)| i as u32)
        .take(n as usize)
        .collect();
    if idx.len() < n as usize {
        return None;
    }
    for &i in &idx {
        slots[i as usize] = false;
    }
    Some(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_and_release_cores() {
        let mut n = Node::new("n1".into(), 4, 1000);
        let k1 = TaskKey { job: 1, index: 0 };
        let k2 = TaskKey { job: 2, index: 0 };
        assert_eq!(n.allocate(k1, 1, 3, 600), Some(vec![0, 1, 2]));
        assert_eq!(n.allocate(k2, 1, 1, 600), None, "memory must not over-commit");
        assert_eq!(n.allocate(k2, 1, 2, 100), None, "cpus must not over-commit");
        n.release(k1, &[0, 1, 2], 600);
        assert_eq!(n.cpus_used, 0);
        assert_eq!(n.allocate(k2, 1, 4, 1000), Some(vec![0, 1, 2, 3]));
        assert_eq!(n.display_state(), "allocated");
    }
}

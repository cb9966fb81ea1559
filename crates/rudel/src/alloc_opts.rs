//! `rudel submit`/`run` options of a multi-node allocation (issue 11), turned into the
//! `allocation` text of the job spec. Slurm's names and meanings: `--mem` is then per
//! node, `--mem-per-cpu` per allocated cpu.
use clap::Args;
use rudel_core::alloc::{parse_nodes, AllocSpec};

/// Allocation options, flattened into `SubmitArgs`.
#[derive(Args, Debug, Clone, Default)]
pub struct AllocArgs {
    /// Nodes for the job, N or MIN-MAX (as many as are free up to MAX): all granted at
    /// once or none. The script runs on the first; SLURM_JOB_NODELIST names them all.
    #[arg(short = 'N', long, value_name = "N[-M]")]
    pub nodes: Option<String>,
    /// Tasks in the allocation (spread over --nodes, or packed onto as few nodes as hold them).
    #[arg(short = 'n', long, value_name = "N")]
    pub ntasks: Option<u32>,
    /// Tasks on each node of the allocation.
    #[arg(long, value_name = "N")]
    pub ntasks_per_node: Option<u32>,
    /// Whole nodes: every cpu of each allocated node, shared with no other job.
    #[arg(long)]
    pub exclusive: bool,
    /// Nodes the allocation must include, e.g. n[1-3],gpu1.
    #[arg(short = 'w', long, value_name = "HOSTLIST")]
    pub nodelist: Option<String>,
    /// Nodes the allocation must not use.
    #[arg(short = 'x', long, value_name = "HOSTLIST")]
    pub exclude: Option<String>,
}

impl AllocArgs {
    /// `self` over `earlier`: options given here win.
    pub fn over(self, earlier: AllocArgs) -> AllocArgs {
        AllocArgs {
            nodes: self.nodes.or(earlier.nodes),
            ntasks: self.ntasks.or(earlier.ntasks),
            ntasks_per_node: self.ntasks_per_node.or(earlier.ntasks_per_node),
            exclusive: self.exclusive || earlier.exclusive,
            nodelist: self.nodelist.or(earlier.nodelist),
            exclude: self.exclude.or(earlier.exclude),
        }
    }

    /// The allocation asked for, or `None` for one task on one node (`-N 1 -n 1` is
    /// that too). `mem_per_cpu` is `--mem-per-cpu` in bytes (0: not given).
    pub fn spec(&self, mem_per_cpu: u64) -> Result<Option<AllocSpec>, String> {
        let (nodes_min, nodes_max) = match &self.nodes {
            Some(v) => parse_nodes(v).map_err(|e| e.to_string())?,
            // Without -N, -n tasks may spread over up to one node each.
            None => (1, self.ntasks.unwrap_or(1).max(1)),
        };
        for (flag, v) in [("--ntasks", self.ntasks), ("--ntasks-per-node", self.ntasks_per_node)] {
            if v == Some(0) {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        let hosts = |flag: &str, v: &Option<String>| -> Result<Vec<String>, String> {
            v.as_deref()
                .map(|s| rudel_core::hostlist::expand(s).map_err(|e| format!("{flag}: {e}")))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        let mut a = AllocSpec {
            nodes_min,
            nodes_max,
            nodes_given: self.nodes.is_some(),
            ntasks: self.ntasks,
            ntasks_per_node: self.ntasks_per_node,
            exclusive: self.exclusive,
            nodelist: hosts("--nodelist", &self.nodelist)?,
            exclude: hosts("--exclude", &self.exclude)?,
            mem_per_cpu,
        };
        // -n N with --ntasks-per-node T needs ceil(N/T) nodes at least.
        if let (Some(n), Some(t), None) = (a.ntasks, a.ntasks_per_node, &self.nodes) {
            a.nodes_min = n.div_ceil(t);
        }
        if !a.is_parallel() {
            return Ok(None);
        }
        a.validate().map_err(|e| e.to_string())?;
        Ok(Some(a))
    }
}

/// The job's memory and allocation text from its options: with an allocation, `--mem`
/// stays per node and `--mem-per-cpu` moves into the allocation (each slice gets it times
/// its cpus), as in Slurm; `mem_bytes` is what the plain options gave.
pub fn allocation(a: &crate::opts::SubmitArgs, mem_bytes: u64, cpus: u32) -> Result<(u64, String), String> {
    let per_cpu = if a.mem_per_cpu.is_some() {
        mem_bytes / u64::from(cpus.max(1))
    } else {
        0
    };
    match a.alloc.spec(per_cpu)? {
        None => Ok((mem_bytes, String::new())),
        Some(spec) if per_cpu > 0 => Ok((0, spec.to_text())),
        Some(spec) => Ok((mem_bytes, spec.to_text())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_to_allocations() {
        let none = AllocArgs {
            nodes: Some("1".into()),
            ntasks: Some(1),
            ..AllocArgs::default()
        };
        assert_eq!(none.spec(0), Ok(None), "-N 1 -n 1 is a plain job");
        let a = AllocArgs {
            nodes: Some("3".into()),
            ntasks: Some(6),
            ..AllocArgs::default()
        };
        let s = a.spec(0).unwrap().unwrap();
        assert_eq!(
            (s.nodes_min, s.nodes_max, s.nodes_given, s.ntasks),
            (3, 3, true, Some(6))
        );
        let packed = AllocArgs {
            ntasks: Some(4),
            ..AllocArgs::default()
        };
        let s = packed.spec(0).unwrap().unwrap();
        assert_eq!((s.nodes_min, s.nodes_max, s.nodes_given), (1, 4, false));
        let bad = AllocArgs {
            nodes: Some("3".into()),
            ntasks: Some(2),
            ..AllocArgs::default()
        };
        assert!(bad.spec(0).unwrap_err().contains("fewer than --nodes"));
        let bad = AllocArgs {
            nodes: Some("x".into()),
            ..AllocArgs::default()
        };
        assert!(bad.spec(0).is_err());
    }
}

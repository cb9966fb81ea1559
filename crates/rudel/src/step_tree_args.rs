//! `--step-tree-fanout` / `--step-tree-threshold` of `rudel up` and `rudel head`: how job
//! steps are launched (docs/parallel-jobs.md, "Launch tree").
use anyhow::anyhow;
use clap::Args;
use rudel_head::step_tree::{TreeConfig, DEFAULT_FANOUT, DEFAULT_THRESHOLD};

use crate::Failure;

#[derive(Args, Debug, Clone)]
pub struct StepTreeArgs {
    /// Launch job steps on more than this many nodes through a tree of agents (each node
    /// starts its own tasks and passes its subtree's launches on); steps on at most this
    /// many nodes are launched by the head directly.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_THRESHOLD)]
    pub step_tree_threshold: usize,
    /// Children per node in the launch tree (at least 2).
    #[arg(long, value_name = "K", default_value_t = DEFAULT_FANOUT)]
    pub step_tree_fanout: usize,
}

impl StepTreeArgs {
    /// The head's tree configuration; a fanout that makes no tree is refused.
    pub fn config(&self) -> Result<TreeConfig, Failure> {
        TreeConfig::new(self.step_tree_fanout, self.step_tree_threshold).map_err(|e| Failure::usage(anyhow!(e)))
    }
}

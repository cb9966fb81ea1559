//! The shape of a step's launch tree (docs/parallel-jobs.md, "Launch tree"): which node
//! passes whose launch on. Pure: node positions in, tree out.
//!
//! Nodes keep the step's (allocation) order in a k-ary heap: the head's children are the
//! first k nodes, node i's children are nodes k(i+1) .. k(i+1)+k-1. So the step's first
//! node (where its srun usually runs) hears from the head itself, and the depth is the
//! least possible for the fanout: ceil(log_k N) at most.

/// Default fanout: each node passes launches to at most this many others.
pub const DEFAULT_FANOUT: usize = 8;
/// Default threshold: steps on at most this many nodes are launched by the head directly
/// (a "handful": one hop is the fastest there, and the head's cost is a few messages).
pub const DEFAULT_THRESHOLD: usize = 8;

/// How steps are launched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeConfig {
    pub fanout: usize,
    pub threshold: usize,
}

impl Default for TreeConfig {
    fn default() -> TreeConfig {
        TreeConfig {
            fanout: DEFAULT_FANOUT,
            threshold: DEFAULT_THRESHOLD,
        }
    }
}

impl TreeConfig {
    /// Refuses a fanout that is no tree: 0 sends nothing, 1 makes a chain as long as the step.
    pub fn new(fanout: usize, threshold: usize) -> Result<TreeConfig, String> {
        if fanout < 2 {
            return Err(format!(
                "--step-tree-fanout {fanout}: a launch tree needs a fanout of at least 2 \
                 (to launch every step from the head directly, raise --step-tree-threshold)"
            ));
        }
        Ok(TreeConfig { fanout, threshold })
    }

    /// True if a step on `n` nodes goes through the tree.
    pub fn use_tree(&self, n: usize) -> bool {
        n > self.threshold && self.fanout >= 2
    }
}

/// A node of the tree: its position in the step's node list and its subtree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeNode {
    pub node: usize,
    pub children: Vec<TreeNode>,
}

/// The head's children (each with its subtree) for `n` nodes and fanout `k` (k >= 2).
pub fn build(n: usize, k: usize) -> Vec<TreeNode> {
    let k = k.max(2);
    (0..k.min(n)).map(|i| subtree(i, n, k)).collect()
}

fn subtree(i: usize, n: usize, k: usize) -> TreeNode {
    let first = k.saturating_mul(i + 1);
    TreeNode {
        node: i,
        children: (first..first.saturating_add(k).min(n))
            .map(|c| subtree(c, n, k))
            .collect(),
    }
}

/// Every node position of the subtree under (and including) `t`.
pub fn members(t: &TreeNode) -> Vec<usize> {
    let mut out = vec![t.node];
    for c in &t.children {
        out.extend(members(c));
    }
    out
}

/// Levels of nodes below the head (1 = every node is a child of the head).
pub fn depth(roots: &[TreeNode]) -> usize {
    roots.iter().map(|r| 1 + depth(&r.children)).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ceil_log(n: usize, k: usize) -> usize {
        let (mut d, mut reach) = (0, 1usize);
        while reach < n {
            reach = reach.saturating_mul(k);
            d += 1;
        }
        d
    }

    #[test]
    fn every_node_exactly_once_first_node_under_the_head_and_shallow() {
        for k in 2..=9 {
            for n in 1..=300 {
                let roots = build(n, k);
                let mut all: Vec<usize> = roots.iter().flat_map(members).collect();
                all.sort_unstable();
                assert_eq!(all, (0..n).collect::<Vec<_>>(), "n={n} k={k}");
                assert_eq!(roots[0].node, 0, "n={n} k={k}");
                assert!(roots.len() <= k);
                assert!(
                    depth(&roots) <= ceil_log(n, k).max(1),
                    "n={n} k={k}: depth {}",
                    depth(&roots)
                );
                fn fan_ok(t: &TreeNode, k: usize) -> bool {
                    t.children.len() <= k && t.children.iter().all(|c| fan_ok(c, k))
                }
                assert!(roots.iter().all(|r| fan_ok(r, k)));
            }
        }
    }

    #[test]
    fn seven_nodes_fanout_two_is_three_levels() {
        let roots = build(7, 2);
        assert_eq!(depth(&roots), 3);
        assert_eq!(roots.iter().map(|r| r.node).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(members(&roots[0]), [0, 2, 6, 3]);
        assert_eq!(members(&roots[1]), [1, 4, 5]);
        assert!(build(0, 2).is_empty());
    }

    #[test]
    fn fanouts_that_make_no_tree_are_refused() {
        for k in [0, 1] {
            let e = TreeConfig::new(k, 8).unwrap_err();
            assert!(e.contains("at least 2"), "{e}");
        }
        let c = TreeConfig::new(2, 8).unwrap();
        assert!(!c.use_tree(8));
        assert!(c.use_tree(9));
    }
}

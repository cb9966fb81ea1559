//! srun's stdin for a job step (`srun --input`, docs/parallel-jobs.md): which ranks read
//! it, and the relay of its chunks (origin agent -> head -> the nodes of those ranks) and
//! of their acknowledgements (back to the origin, whose srun keeps a bounded window of
//! bytes not yet written into the tasks).
use rudel_proto::v1 as pb;
use rudel_proto::v1::head_message::Msg as HeadMsg;

use crate::agent_service::AgentService;
use crate::steps::NodePart;

/// Which tasks of a step read srun's stdin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Nobody: every task reads `/dev/null` (also what an srun that predates stdin
    /// forwarding asks for, by sending no `input`).
    None,
    /// Every task (Slurm's default).
    All,
    /// One task, by rank (`srun --input=N`).
    Rank(u32),
}

impl Input {
    /// Parses StepRequest.input for a step of `ntasks` tasks.
    pub fn parse(v: &str, ntasks: u32) -> Result<Input, String> {
        match v {
            "" | "none" => Ok(Input::None),
            "all" => Ok(Input::All),
            n => match n.parse::<u32>() {
                Ok(r) if r < ntasks => Ok(Input::Rank(r)),
                Ok(r) => Err(format!(
                    "--input={r}: the step has {ntasks} task(s), numbered 0 to {}",
                    ntasks.saturating_sub(1)
                )),
                Err(_) => Err(format!("--input={n}: expected all, none or a task id")),
            },
        }
    }

    /// The ranks of `part` that read stdin.
    pub fn ranks_of(self, part: &NodePart) -> Vec<u32> {
        match self {
            Input::None => Vec::new(),
            Input::All => part.ranks.clone(),
            Input::Rank(r) => part.ranks.iter().copied().filter(|&x| x == r).collect(),
        }
    }

    /// The nodes with a rank that reads stdin, in step order.
    pub fn nodes(self, parts: &[NodePart]) -> Vec<String> {
        parts
            .iter()
            .filter(|p| !self.ranks_of(p).is_empty())
            .map(|p| p.name.clone())
            .collect()
    }
}

/// A chunk of srun's stdin from `node`'s agent: to every node with a reading rank. Only
/// the step's origin may feed it (another agent's chunk is dropped and logged).
pub fn on_stdin(svc: &AgentService, node: &str, s: pb::StepStdin) {
    let Some(targets) = svc.steps.stdin_nodes(s.job, s.step, node) else {
        tracing::warn!(
            node,
            job = s.job,
            step = s.step,
            "stdin for a step this node's srun does not run; dropped"
        );
        return;
    };
    for t in targets {
        crate::step_relay::send_to(svc, &t, HeadMsg::StepStdin(s.clone()));
    }
}

/// A node wrote stdin into its tasks: to the agent whose srun sends it.
pub fn on_ack(svc: &AgentService, a: pb::StepStdinAck) {
    if let Some(origin) = svc.steps.origin(a.job, a.step) {
        crate::step_relay::send_to(svc, &origin, HeadMsg::StepStdinAck(a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, ranks: &[u32]) -> NodePart {
        NodePart {
            name: name.into(),
            ranks: ranks.to_vec(),
            cores: Vec::new(),
            mem_bytes: 0,
        }
    }

    #[test]
    fn input_selects_ranks_and_their_nodes() {
        let parts = [part("a", &[0, 1]), part("b", &[2, 3])];
        assert_eq!(Input::parse("all", 4), Ok(Input::All));
        assert_eq!(Input::All.nodes(&parts), ["a", "b"]);
        let r = Input::parse("3", 4).unwrap();
        assert_eq!(r.nodes(&parts), ["b"]);
        assert_eq!(r.ranks_of(&parts[1]), [3]);
        assert!(r.ranks_of(&parts[0]).is_empty());
        for none in ["", "none"] {
            assert_eq!(Input::parse(none, 4).unwrap().nodes(&parts), Vec::<String>::new());
        }
    }

    #[test]
    fn a_rank_outside_the_step_or_a_file_is_refused() {
        let e = Input::parse("4", 4).unwrap_err();
        assert!(e.contains("numbered 0 to 3"), "{e}");
        assert!(Input::parse("in.txt", 4).is_err());
    }
}

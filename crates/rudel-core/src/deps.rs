//! Job dependencies (Slurm 22.05 `--dependency` semantics): the spec, its parser and the
//! pure evaluation of one spec against the states of the jobs it names.
//!
//! Evaluation is a function of the targets' states and the log's `now_ms` only, so every
//! replica reaches the same verdict (the apply path is a protocol). Hooking this into
//! `State` (index job -> dependants, queue eligibility) is not done yet: see the report.
use crate::ids::JobId;
use serde::{Deserialize, Serialize};

/// One dependency type, as Slurm names it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DepKind {
    /// `after:ID[+min]`: the target started (or was cancelled) `min` minutes ago.
    After {
        delay_min: u32,
    },
    AfterOk,
    AfterAny,
    AfterNotOk,
    /// `aftercorr`: array task i waits for task i of the target array.
    AfterCorr,
    /// `singleton`: every earlier job of the same name and user has ended.
    Singleton,
}

/// A job named by a dependency; `index` is set for `ID_INDEX` (one array task).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepTarget {
    pub job: JobId,
    #[serde(default)]
    pub index: Option<u32>,
}

/// `kind:id[:id...]`; `singleton` has no targets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepClause {
    pub kind: DepKind,
    pub targets: Vec<DepTarget>,
}

/// A whole `--dependency` value: clauses joined by `,` (all must hold) or `?` (any may).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepSpec {
    pub clauses: Vec<DepClause>,
    /// True when joined by `?`.
    #[serde(default)]
    pub any: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DepError {
    #[error("empty dependency specification")]
    Empty,
    #[error("dependency specification mixes ',' and '?': use one of them")]
    MixedSeparators,
    #[error("unknown dependency type {0:?} (after, afterok, afterany, afternotok, aftercorr, singleton)")]
    UnknownKind(String),
    #[error("dependency {0:?} names no job id")]
    NoTargets(String),
    #[error("invalid job id {0:?} in dependency")]
    BadId(String),
    #[error("'+time' is only allowed with 'after' (in {0:?})")]
    DelayNotAllowed(String),
}

/// Parse Slurm's syntax: `afterok:1:2,afterany:3`, `after:5+10`, `afterok:1?afterok:2`,
/// `singleton`, `afterok:7_3` (one array task).
pub fn parse(text: &str) -> Result<DepSpec, DepError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DepError::Empty);
    }
    let (has_comma, has_q) = (text.contains(','), text.contains('?'));
    if has_comma && has_q {
        return Err(DepError::MixedSeparators);
    }
    let sep = if has_q { '?' } else { ',' };
    let clauses = text.split(sep).map(parse_clause).collect::<Result<Vec<_>, _>>()?;
    Ok(DepSpec { clauses, any: has_q })
}

fn parse_clause(text: &str) -> Result<DepClause, DepError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DepError::Empty);
    }
    let mut parts = text.split(':');
    let name = parts.next().unwrap_or_default();
    let ids: Vec<&str> = parts.collect();
    if name == "singleton" {
        if !ids.is_empty() {
            return Err(DepError::BadId(text.to_string()));
        }
        return Ok(DepClause {
            kind: DepKind::Singleton,
            targets: Vec::new(),
        });
    }
    if ids.is_empty() || ids.iter().any(|s| s.is_empty()) {
        return Err(DepError::NoTargets(text.to_string()));
    }
    let mut delay = None;
    let mut targets = Vec::with_capacity(ids.len());
    for raw in ids {
        let (id, d) = match raw.split_once('+') {
            Some((id, d)) => (id, Some(d.parse::<u32>().map_err(|_| DepError::BadId(raw.into()))?)),
            None => (raw, None),
        };
        if d.is_some() {
            // Slurm allows one delay per `after` clause; the largest one given wins.
            delay = delay.max(d);
        }
        targets.push(parse_target(id)?);
    }
    let kind = match name {
        "after" => DepKind::After {
            delay_min: delay.unwrap_or(0),
        },
        "afterok" => DepKind::AfterOk,
        "afterany" => DepKind::AfterAny,
        "afternotok" => DepKind::AfterNotOk,
        "aftercorr" => DepKind::AfterCorr,
        other => return Err(DepError::UnknownKind(other.to_string())),
    };
    if delay.is_some() && !matches!(kind, DepKind::After { .. }) {
        return Err(DepError::DelayNotAllowed(text.to_string()));
    }
    Ok(DepClause { kind, targets })
}

fn parse_target(text: &str) -> Result<DepTarget, DepError> {
    let bad = || DepError::BadId(text.to_string());
    let (job, index) = match text.split_once('_') {
        Some((j, i)) => (j, Some(i.parse::<u32>().map_err(|_| bad())?)),
        None => (text, None),
    };
    let job = job.parse::<JobId>().map_err(|_| bad())?;
    Ok(DepTarget { job, index })
}

/// What the evaluator needs to know about one target (a job, an array task, or for
/// `aftercorr` the corresponding task).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TargetState {
    NotStarted,
    /// Started at this log time (ms).
    Running {
        started_ms: u64,
    },
    /// Ended; `ok` = every task completed with exit code 0. `started_ms` is None when it
    /// was cancelled before starting.
    Ended {
        ok: bool,
        started_ms: Option<u64>,
    },
}

/// Verdict on one condition or a whole spec.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Satisfied,
    Waiting,
    /// Can never hold (e.g. afterok on a failed job): reason `DependencyNeverSatisfied`.
    Never,
}

/// One condition of `kind` against one target at log time `now_ms`.
pub fn check(kind: DepKind, target: TargetState, now_ms: u64) -> Verdict {
    use TargetState::*;
    match (kind, target) {
        (DepKind::After { delay_min }, Running { started_ms })
        | (
            DepKind::After { delay_min },
            Ended {
                started_ms: Some(started_ms),
                ..
            },
        ) => {
            if now_ms >= started_ms.saturating_add(u64::from(delay_min) * 60_000) {
                Verdict::Satisfied
            } else {
                Verdict::Waiting
            }
        }
        // Slurm: `after` also holds once the target was cancelled before it started.
        (DepKind::After { .. }, Ended { started_ms: None, .. }) => Verdict::Satisfied,
        (_, NotStarted) | (_, Running { .. }) => Verdict::Waiting,
        (DepKind::AfterAny, Ended { .. }) | (DepKind::Singleton, Ended { .. }) => Verdict::Satisfied,
        (DepKind::AfterOk, Ended { ok, .. }) | (DepKind::AfterCorr, Ended { ok, .. }) => {
            if ok {
                Verdict::Satisfied
            } else {
                Verdict::Never
            }
        }
        (DepKind::AfterNotOk, Ended { ok, .. }) => {
            if ok {
                Verdict::Never
            } else {
                Verdict::Satisfied
            }
        }
    }
}

/// Combine verdicts: with `,` all must hold (one Never -> Never), with `?` any may hold
/// (Never only when every one is Never).
pub fn combine(verdicts: impl IntoIterator<Item = Verdict>, any: bool) -> Verdict {
    let (mut sat, mut never, mut n) = (0usize, 0usize, 0usize);
    for v in verdicts {
        n += 1;
        match v {
            Verdict::Satisfied => sat += 1,
            Verdict::Never => never += 1,
            Verdict::Waiting => {}
        }
    }
    if any {
        if sat > 0 || n == 0 {
            Verdict::Satisfied
        } else if never == n {
            Verdict::Never
        } else {
            Verdict::Waiting
        }
    } else if never > 0 {
        Verdict::Never
    } else if sat == n {
        Verdict::Satisfied
    } else {
        Verdict::Waiting
    }
}

/// Evaluate a spec; `state_of` gives each target's state. A singleton clause carries as
/// targets the earlier unfinished jobs of the same name and user (resolved at submit by
/// the state); it holds once all of them ended, whatever the separator.
pub fn evaluate(spec: &DepSpec, now_ms: u64, mut state_of: impl FnMut(DepTarget) -> TargetState) -> Verdict {
    let per_clause: Vec<Verdict> = spec
        .clauses
        .iter()
        .map(|c| {
            let any = spec.any && c.kind != DepKind::Singleton;
            combine(c.targets.iter().map(|t| check(c.kind, state_of(*t), now_ms)), any)
        })
        .collect();
    combine(per_clause, spec.any)
}

/// The index job -> dependants, so a job's end re-evaluates only the jobs that name it
/// (never a scan of all jobs: a DAG of 10,000 jobs must not make apply quadratic).
/// BTreeMap keeps iteration order identical on every replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepGraph {
    dependants: std::collections::BTreeMap<JobId, Vec<JobId>>,
    waiting: std::collections::BTreeMap<JobId, DepSpec>,
}

impl DepGraph {
    /// Register a job waiting on `spec` (singleton clauses are the caller's business).
    pub fn add(&mut self, job: JobId, spec: DepSpec) {
        for c in &spec.clauses {
            for t in &c.targets {
                let list = self.dependants.entry(t.job).or_default();
                if list.last() != Some(&job) {
                    list.push(job);
                }
            }
        }
        self.waiting.insert(job, spec);
    }

    /// The spec a job still waits on, if any.
    pub fn spec(&self, job: JobId) -> Option<&DepSpec> {
        self.waiting.get(&job)
    }

    /// Jobs to re-evaluate because `target` changed state (started or ended).
    pub fn dependants(&self, target: JobId) -> &[JobId] {
        self.dependants.get(&target).map_or(&[], Vec::as_slice)
    }

    /// Forget a job once its dependencies are resolved (satisfied, cancelled, killed).
    pub fn resolve(&mut self, job: JobId) -> Option<DepSpec> {
        self.waiting.remove(&job)
    }

    /// Drop the dependant list of a target whose state can no longer change.
    pub fn forget_target(&mut self, target: JobId) {
        self.dependants.remove(&target);
    }

    /// True when no job waits on anything (the common case: nothing to settle).
    pub fn is_empty(&self) -> bool {
        self.dependants.is_empty() && self.waiting.is_empty()
    }

    /// Jobs still waiting whose spec names `target` (a scan of the waiting jobs: only a
    /// requeue asks, not the apply of every entry).
    pub fn waiting_on(&self, target: JobId) -> Vec<JobId> {
        self.waiting
            .iter()
            .filter(|(_, s)| s.clauses.iter().any(|c| c.targets.iter().any(|t| t.job == target)))
            .map(|(&j, _)| j)
            .collect()
    }

    /// Replaces the spec a waiting job waits on (a requeue pins conditions that held).
    pub fn replace(&mut self, job: JobId, spec: DepSpec) {
        if let Some(s) = self.waiting.get_mut(&job) {
            *s = spec;
        }
    }

    /// Makes `job` a dependant of `target` again (after the index forgot the target).
    pub fn link(&mut self, job: JobId, target: JobId) {
        let list = self.dependants.entry(target).or_default();
        if !list.contains(&job) {
            list.push(job);
        }
    }

    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }
}

impl std::fmt::Display for DepSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.any { "?" } else { "," };
        for (i, c) in self.clauses.iter().enumerate() {
            if i > 0 {
                f.write_str(sep)?;
            }
            let name = match c.kind {
                DepKind::After { .. } => "after",
                DepKind::AfterOk => "afterok",
                DepKind::AfterAny => "afterany",
                DepKind::AfterNotOk => "afternotok",
                DepKind::AfterCorr => "aftercorr",
                DepKind::Singleton => "singleton",
            };
            f.write_str(name)?;
            // A singleton's targets are resolved by the state, not written by the user.
            let written = if c.kind == DepKind::Singleton {
                &[][..]
            } else {
                &c.targets[..]
            };
            for t in written {
                write!(f, ":{}", t.job)?;
                if let Some(i) = t.index {
                    write!(f, "_{i}")?;
                }
                if let DepKind::After { delay_min } = c.kind {
                    if delay_min > 0 {
                        write!(f, "+{delay_min}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(job: JobId) -> DepTarget {
        DepTarget { job, index: None }
    }

    #[test]
    fn parses_slurm_syntax() {
        let s = parse("afterok:1:2,afterany:3").unwrap();
        assert!(!s.any);
        assert_eq!(
            s.clauses[0],
            DepClause {
                kind: DepKind::AfterOk,
                targets: vec![t(1), t(2)]
            }
        );
        assert_eq!(s.clauses[1].kind, DepKind::AfterAny);
        let s = parse("after:5+10").unwrap();
        assert_eq!(s.clauses[0].kind, DepKind::After { delay_min: 10 });
        let s = parse("afterok:1?afternotok:2").unwrap();
        assert!(s.any);
        assert_eq!(parse("singleton").unwrap().clauses[0].kind, DepKind::Singleton);
        assert_eq!(
            parse("afterok:7_3").unwrap().clauses[0].targets[0],
            DepTarget { job: 7, index: Some(3) }
        );
        assert_eq!(
            parse("afterok:1,afterany:3").unwrap().to_string(),
            "afterok:1,afterany:3"
        );
    }

    #[test]
    fn refuses_bad_specs() {
        assert_eq!(parse(""), Err(DepError::Empty));
        assert_eq!(parse("afterok:1,afterok:2?afterok:3"), Err(DepError::MixedSeparators));
        assert!(matches!(parse("before:1"), Err(DepError::UnknownKind(_))));
        assert!(matches!(parse("afterok"), Err(DepError::NoTargets(_))));
        assert!(matches!(parse("afterok:x"), Err(DepError::BadId(_))));
        assert!(matches!(parse("afterok:1+5"), Err(DepError::DelayNotAllowed(_))));
        assert!(matches!(parse("singleton:3"), Err(DepError::BadId(_))));
    }

    #[test]
    fn never_satisfiable_detected() {
        let failed = TargetState::Ended {
            ok: false,
            started_ms: Some(0),
        };
        let ok = TargetState::Ended {
            ok: true,
            started_ms: Some(0),
        };
        assert_eq!(check(DepKind::AfterOk, failed, 0), Verdict::Never);
        assert_eq!(check(DepKind::AfterNotOk, ok, 0), Verdict::Never);
        assert_eq!(check(DepKind::AfterAny, failed, 0), Verdict::Satisfied);
        assert_eq!(
            check(DepKind::AfterOk, TargetState::Running { started_ms: 0 }, 9),
            Verdict::Waiting
        );
    }

    #[test]
    fn after_delay_uses_log_time() {
        let k = DepKind::After { delay_min: 1 };
        let r = TargetState::Running { started_ms: 1_000 };
        assert_eq!(check(k, r, 60_999), Verdict::Waiting);
        assert_eq!(check(k, r, 61_000), Verdict::Satisfied);
        assert_eq!(
            check(
                k,
                TargetState::Ended {
                    ok: false,
                    started_ms: None
                },
                0
            ),
            Verdict::Satisfied
        );
    }

    #[test]
    fn combine_all_and_any() {
        use Verdict::*;
        assert_eq!(combine([Satisfied, Waiting], false), Waiting);
        assert_eq!(combine([Satisfied, Never], false), Never);
        assert_eq!(combine([Satisfied, Satisfied], false), Satisfied);
        assert_eq!(combine([Never, Satisfied], true), Satisfied);
        assert_eq!(combine([Never, Waiting], true), Waiting);
        assert_eq!(combine([Never, Never], true), Never);
    }

    #[test]
    fn evaluate_spec() {
        let s = parse("afterok:1,afterany:2").unwrap();
        let v = evaluate(&s, 0, |tg| match tg.job {
            1 => TargetState::Ended {
                ok: true,
                started_ms: Some(0),
            },
            _ => TargetState::Running { started_ms: 0 },
        });
        assert_eq!(v, Verdict::Waiting);
    }
    /// DAG apply cost is linear: 100 chains of 100; ending each job re-evaluates only
    /// its dependants, so total evaluations == edges (9,900), not jobs^2.
    #[test]
    fn dag_cost_linear() {
        let mut g = DepGraph::default();
        let (chains, len) = (100u64, 100u64);
        for c in 0..chains {
            for i in 1..len {
                let job = c * len + i;
                g.add(job, parse(&format!("afterok:{}", job - 1)).unwrap());
            }
        }
        let mut ended = std::collections::BTreeSet::new();
        let mut ready: Vec<JobId> = (0..chains).map(|c| c * len).collect();
        let (mut evals, mut order) = (0usize, Vec::new());
        while let Some(job) = ready.pop() {
            // a job never starts before its afterok dependencies completed
            if let Some(spec) = g.spec(job) {
                for t in &spec.clauses[0].targets {
                    assert!(ended.contains(&t.job), "job {job} started before {}", t.job);
                }
            }
            g.resolve(job);
            ended.insert(job);
            order.push(job);
            for &d in g.dependants(job) {
                evals += 1;
                let Some(spec) = g.spec(d) else { continue };
                let v = evaluate(spec, 0, |t| {
                    if ended.contains(&t.job) {
                        TargetState::Ended {
                            ok: true,
                            started_ms: Some(0),
                        }
                    } else {
                        TargetState::NotStarted
                    }
                });
                if v == Verdict::Satisfied {
                    ready.push(d);
                }
            }
            g.forget_target(job);
        }
        assert_eq!(order.len() as u64, chains * len);
        assert_eq!(evals as u64, chains * (len - 1));
        assert_eq!(g.waiting_len(), 0);
    }

    proptest::proptest! {
        /// afterok is Satisfied only when the target ended ok; afternotok only when it ended
        /// not ok; nothing but `after` is satisfied by a job that has not ended.
        #[test]
        fn verdict_matches_target(kind in 0u8..5, st in 0u8..4, start in 0u64..1000, now in 0u64..200_000) {
            let kind = [DepKind::AfterOk, DepKind::AfterAny, DepKind::AfterNotOk, DepKind::AfterCorr, DepKind::After { delay_min: 1 }][kind as usize];
            let target = match st {
                0 => TargetState::NotStarted,
                1 => TargetState::Running { started_ms: start },
                2 => TargetState::Ended { ok: true, started_ms: Some(start) },
                _ => TargetState::Ended { ok: false, started_ms: Some(start) },
            };
            let v = check(kind, target, now);
            if v == Verdict::Satisfied {
                match kind {
                    DepKind::AfterOk | DepKind::AfterCorr => proptest::prop_assert_eq!(st, 2),
                    DepKind::AfterNotOk => proptest::prop_assert_eq!(st, 3),
                    DepKind::AfterAny => proptest::prop_assert!(st >= 2),
                    _ => proptest::prop_assert!(st >= 1 && now >= start + 60_000),
                }
            }
        }
    }
}

//! Applying `Command::StepEnded`: a job step's record goes to accounting (see `steps.rs`).
//! The state keeps only counts, so the cap holds however many steps a job runs.
use super::State;
use crate::command::Response;
use crate::events::Event;
use crate::steps::{StepRecord, MAX_STEPS_PER_JOB};

impl State {
    pub(crate) fn record_step(&mut self, record: StepRecord) -> Response {
        let record = record.bounded();
        let Some(job) = self.jobs.get_mut(&record.job) else {
            return Response::Rejected {
                reason: format!("no job {} to record step {} of", record.job, record.step),
            };
        };
        job.next_step = job.next_step.max(record.step.saturating_add(1));
        if job.steps_recorded >= MAX_STEPS_PER_JOB {
            job.steps_dropped = job.steps_dropped.saturating_add(1);
            return Response::Rejected {
                reason: format!(
                    "job {} already has {MAX_STEPS_PER_JOB} step records: step {} is counted, not recorded",
                    record.job, record.step
                ),
            };
        }
        job.steps_recorded += 1;
        self.emit(Event::StepEnded {
            record: Box::new(record),
        });
        Response::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::steps::StepState;

    fn rec(job: u64, step: u32) -> StepRecord {
        StepRecord {
            job,
            step,
            name: "true".into(),
            nodelist: "n1".into(),
            ntasks: 2,
            cpus: 2,
            start_ms: 10,
            end_ms: 20,
            state: StepState::Completed,
            exit_code: 0,
            signal: 0,
        }
    }

    fn ended(s: &mut State, r: StepRecord) -> (Response, usize) {
        let out = s.apply_output(Command::StepEnded {
            version: crate::steps::STEP_RECORD_VERSION,
            record: r,
            now_ms: 30,
        });
        let n = out
            .events
            .iter()
            .filter(|e| matches!(e, Event::StepEnded { .. }))
            .count();
        (out.response, n)
    }

    fn state_with_job() -> State {
        let mut s = State::new();
        let spec = crate::JobSpec {
            argv: vec!["true".into()],
            cpus: 1,
            chdir: "/".into(),
            ..Default::default()
        };
        s.apply(Command::Submit {
            request_id: "r".into(),
            spec,
            now_ms: 1,
        });
        s
    }

    #[test]
    fn a_step_of_an_unknown_job_is_refused_and_emits_nothing() {
        let mut s = state_with_job();
        let (r, n) = ended(&mut s, rec(99, 0));
        assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
        assert_eq!(n, 0);
    }

    #[test]
    fn steps_past_the_cap_are_counted_not_recorded() {
        let mut s = state_with_job();
        for i in 0..MAX_STEPS_PER_JOB {
            assert_eq!(ended(&mut s, rec(1, i)), (Response::Ok, 1));
        }
        let (r, n) = ended(&mut s, rec(1, MAX_STEPS_PER_JOB));
        assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
        assert_eq!(n, 0);
        let j = &s.jobs[&1];
        assert_eq!(
            (j.steps_recorded, j.steps_dropped, j.next_step),
            (MAX_STEPS_PER_JOB, 1, MAX_STEPS_PER_JOB + 1)
        );
    }

    #[test]
    fn a_newer_record_version_is_refused_by_precheck() {
        let s = State::new();
        let cmd = Command::StepEnded {
            version: crate::steps::STEP_RECORD_VERSION + 1,
            record: rec(1, 0),
            now_ms: 1,
        };
        assert!(s.precheck(&cmd).unwrap_err().to_string().contains("upgrade this head"));
    }
}

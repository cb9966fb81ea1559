//! Options of the `scale` mode.
use crate::workload::Amount;

pub const HELP: &str = "\
rudel-sched-sim scale [OPTIONS]: issue 9's scheduler targets on a mixed workload

  --nodes A,B,...      cluster sizes (default 10,100,1000,10000); the workload scales
                       with the size, the full amount at the largest
  --jobs N             separate jobs at the largest size (default 100000)
  --array-tasks N      tasks in arrays at the largest size (default 900000)
  --array-size N       tasks per array (default 10000)
  --users N            users sharing the cluster by fair-share (default 100)
  --budget-s S         stop a size's run after S seconds of apply CPU (default 60)
  --round-ms MS        log time one entry of reports covers (default 1000)
  --tick-s S           log time between Ticks (default 30)
  --ticks N            Ticks applied after a size's run, for the Tick percentile
                       (default 10)
  --submit-batch N     submits per log entry while the workload is queued (default 1000)
  --mem-jobs N         separate pending jobs for the memory target (default 100000)
  --mem-array N        tasks of the one array for the memory target (default 1000000)
  --set KEY=VALUE      one more scheduling setting (repeatable), applied after the
                       workload's own, e.g. --set queue_depth=0 --set backfill=off
  --no-partitions      configure no partitions (jobs get the time limit their partition
                       would have given them): what partitions cost
  --quick              a tenth of every amount (--jobs, --array-tasks, --mem-*), sizes
                       10,100,1000, --budget-s 20 (options after it override it)
";

#[derive(Clone, Debug)]
pub struct ScaleArgs {
    pub nodes: Vec<u32>,
    pub amount: Amount,
    pub budget_s: f64,
    pub round_ms: u64,
    pub tick_s: u64,
    pub ticks: u32,
    pub submit_batch: usize,
    pub mem_jobs: u64,
    pub mem_array: u32,
    /// Scheduling settings applied after the workload's (`--set`).
    pub settings: Vec<(String, String)>,
}

impl Default for ScaleArgs {
    fn default() -> Self {
        ScaleArgs {
            nodes: vec![10, 100, 1_000, 10_000],
            amount: Amount {
                users: 100,
                jobs: 100_000,
                array_tasks: 900_000,
                array_size: 10_000,
                partitions: true,
            },
            budget_s: 60.0,
            round_ms: 1_000,
            tick_s: 30,
            ticks: 10,
            submit_batch: 1_000,
            mem_jobs: 100_000,
            mem_array: 1_000_000,
            settings: Vec::new(),
        }
    }
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e| format!("{flag} {v:?}: {e}"))
}

/// Parses the options after `scale`; `None` when the help was asked for (and printed),
/// `Err` is the message to print.
pub fn parse(argv: Vec<String>) -> Result<Option<ScaleArgs>, String> {
    let mut a = ScaleArgs::default();
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--help" | "-h" => {
                print!("{HELP}");
                return Ok(None);
            }
            "--no-partitions" => {
                a.amount.partitions = false;
                continue;
            }
            "--quick" => {
                a.nodes = vec![10, 100, 1_000];
                a.amount.jobs /= 10;
                a.amount.array_tasks /= 10;
                a.mem_jobs /= 10;
                a.mem_array /= 10;
                a.budget_s = 20.0;
                continue;
            }
            _ => {}
        }
        let v = it.next().ok_or(format!("{flag} needs a value (see scale --help)"))?;
        match flag.as_str() {
            "--nodes" => a.nodes = v.split(',').map(|x| num("--nodes", x)).collect::<Result<_, _>>()?,
            "--jobs" => a.amount.jobs = num(&flag, &v)?,
            "--array-tasks" => a.amount.array_tasks = num(&flag, &v)?,
            "--array-size" => a.amount.array_size = num(&flag, &v)?,
            "--users" => a.amount.users = num(&flag, &v)?,
            "--budget-s" => a.budget_s = num(&flag, &v)?,
            "--round-ms" => a.round_ms = num(&flag, &v)?,
            "--tick-s" => a.tick_s = num(&flag, &v)?,
            "--ticks" => a.ticks = num(&flag, &v)?,
            "--submit-batch" => a.submit_batch = num(&flag, &v)?,
            "--mem-jobs" => a.mem_jobs = num(&flag, &v)?,
            "--mem-array" => a.mem_array = num(&flag, &v)?,
            "--set" => {
                let (k, val) = v.split_once('=').ok_or(format!("--set {v:?}: expected KEY=VALUE"))?;
                a.settings.push((k.to_string(), val.to_string()));
            }
            _ => return Err(format!("unknown option {flag}\n{HELP}")),
        }
    }
    check(&a)?;
    Ok(Some(a))
}

fn check(a: &ScaleArgs) -> Result<(), String> {
    if a.nodes.is_empty() || a.nodes.contains(&0) {
        return Err("--nodes: sizes must be > 0".into());
    }
    if a.amount.users == 0 || a.amount.array_size == 0 || a.submit_batch == 0 {
        return Err("--users, --array-size and --submit-batch must be > 0".into());
    }
    if a.round_ms == 0 || a.tick_s == 0 || a.budget_s.is_nan() || a.budget_s <= 0.0 {
        return Err("--round-ms, --tick-s and --budget-s must be > 0".into());
    }
    Ok(())
}

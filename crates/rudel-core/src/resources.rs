//! Counted resources beyond cpus and memory: per-node generic resources ("gres": GPUs,
//! FPGAs, ... each unit with an index, given to one task at a time) and cluster-wide
//! licenses (a semaphore per name, declared in the scheduling configuration).
//!
//! A pool is named `NAME` or `NAME:TYPE` (`gpu`, `gpu:a100`). A request for `NAME` may be
//! served by any pool of that name, typed or not; a request for `NAME:TYPE` only by that
//! pool. One request is served from one pool (a task never gets half a100s, half v100s).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Per-task request: pool name (or `NAME:TYPE`) → units.
pub type GresRequest = BTreeMap<String, u32>;

/// Units of each pool a task holds: (pool name, unit indices).
pub type GresGrant = Vec<(String, Vec<u32>)>;

/// Most units one node may declare in one pool, and most one task may ask for.
pub const MAX_GRES_UNITS: u32 = 1024;

/// One pool of a node: which units are free.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GresPool {
    /// `free[i]` is true when unit `i` is not given to a task.
    pub free: Vec<bool>,
}

impl GresPool {
    pub fn new(units: u32) -> GresPool {
        GresPool {
            free: vec![true; units.min(MAX_GRES_UNITS) as usize],
        }
    }

    pub fn total(&self) -> u32 {
        self.free.len() as u32
    }

    pub fn available(&self) -> u32 {
        self.free.iter().filter(|f| **f).count() as u32
    }

    /// Changes the size, keeping units in use (a shrunk pool may stay over its new size
    /// until they are released).
    pub fn resize(&mut self, units: u32) {
        let want = units.min(MAX_GRES_UNITS) as usize;
        if self.free.len() < want {
            self.free.resize(want, true);
        }
        while self.free.len() > want && self.free.last() == Some(&true) {
            self.free.pop();
        }
    }
}

/// True when pool `pool` can serve a request named `want`.
pub fn serves(pool: &str, want: &str) -> bool {
    pool == want || (!want.contains(':') && pool.split_once(':').is_some_and(|(name, _)| name == want))
}

/// The pools that could ever serve `want` with `units`, in name order.
pub fn could_ever_serve(pools: &BTreeMap<String, GresPool>, want: &str, units: u32) -> bool {
    pools.iter().any(|(name, p)| serves(name, want) && p.total() >= units)
}

/// Picks, for every request, the first pool (in name order) with enough available units,
/// where `taken(pool)` units are already promised elsewhere. `None` if any request cannot
/// be served.
pub fn choose_pools(
    pools: &BTreeMap<String, GresPool>,
    req: &GresRequest,
    taken: impl Fn(&str) -> u32,
) -> Option<Vec<(String, u32)>> {
    let mut chosen: Vec<(String, u32)> = Vec::with_capacity(req.len());
    for (want, &units) in req {
        let pool = pools.iter().find(|(name, p)| {
            let promised = taken(name) + chosen.iter().filter(|(c, _)| c == *name).map(|(_, u)| *u).sum::<u32>();
            serves(name, want) && p.available().saturating_sub(promised) >= units
        })?;
        chosen.push((pool.0.clone(), units));
    }
    Some(chosen)
}

/// The environment naming a task's GPUs: every pool named `gpu` or `gpu:TYPE`.
pub fn gpu_env(grant: &GresGrant) -> Vec<(String, String)> {
    let ids: Vec<String> = grant
        .iter()
        .filter(|(pool, _)| serves(pool, "gpu"))
        .flat_map(|(_, units)| units.iter().map(u32::to_string))
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let list = ids.join(",");
    [
        "CUDA_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "GPU_DEVICE_ORDINAL",
        "RUDEL_GPUS",
    ]
    .into_iter()
    .map(|k| (k.to_string(), list.clone()))
    .collect()
}

/// Parses `gpu:2`, `gpu:a100:2`, `fpga` (1 unit), comma-separated: Slurm's `--gres`.
pub fn parse_gres(s: &str) -> Result<GresRequest, String> {
    let mut req = GresRequest::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let item = item.strip_prefix("gres/").unwrap_or(item);
        let parts: Vec<&str> = item.split(':').collect();
        let (name, units) = match parts.as_slice() {
            [name] => (name.to_string(), 1),
            [name, n] if n.chars().all(|c| c.is_ascii_digit()) => (name.to_string(), parse_units(n, item)?),
            [name, ty] => (format!("{name}:{ty}"), 1),
            [name, ty, n] => (format!("{name}:{ty}"), parse_units(n, item)?),
            _ => {
                return Err(format!(
                    "bad resource request {item:?}: use NAME[:TYPE][:COUNT], e.g. gpu:2"
                ))
            }
        };
        check_name(&name)?;
        if units > 0 {
            *req.entry(name).or_default() += units;
        }
    }
    if req.is_empty() {
        return Err(format!("no resource in {s:?}: use NAME[:TYPE][:COUNT], e.g. gpu:2"));
    }
    Ok(req)
}

/// Parses Slurm's `--licenses`: `matlab`, `matlab:2`, `a:1,b:3` (`@server` refused).
pub fn parse_licenses(s: &str) -> Result<BTreeMap<String, u32>, String> {
    let mut req = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if item.contains('@') {
            return Err(format!(
                "remote licenses ({item:?}) are not supported: name a cluster license"
            ));
        }
        let (name, units) = match item.split_once(':') {
            Some((name, n)) => (name, parse_units(n, item)?),
            None => (item, 1),
        };
        check_name(name)?;
        *req.entry(name.to_string()).or_insert(0) += units;
    }
    if req.is_empty() {
        return Err(format!("no license in {s:?}: use NAME[:COUNT], e.g. matlab:2"));
    }
    Ok(req)
}

/// Parses a declared inventory `NAME=COUNT` (agent `--resource fpga=2`).
pub fn parse_inventory(s: &str) -> Result<(String, u32), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("bad resource {s:?}: use NAME=COUNT, e.g. fpga=2 or gpu:a100=4"))?;
    check_name(name)?;
    Ok((name.to_string(), parse_units(n, s)?))
}

/// Checks a request that arrived as a map (from the API): names and counts as the parsers
/// accept them.
pub fn check_request(what: &str, req: &BTreeMap<String, u32>) -> Result<(), String> {
    if req.len() > 16 {
        return Err(format!("at most 16 {what} per job"));
    }
    for (name, units) in req {
        check_name(name)?;
        if *units == 0 || *units > MAX_GRES_UNITS {
            return Err(format!(
                "{what} {name}: a count from 1 to {MAX_GRES_UNITS}, got {units}"
            ));
        }
    }
    Ok(())
}

fn parse_units(n: &str, item: &str) -> Result<u32, String> {
    n.parse::<u32>()
        .ok()
        .filter(|u| *u <= MAX_GRES_UNITS)
        .ok_or_else(|| format!("bad count in {item:?}: a whole number from 0 to {MAX_GRES_UNITS}"))
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.split(':').count() <= 2
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        && !name.starts_with(':')
        && !name.ends_with(':');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad resource name {name:?}: letters, digits, _ - . and one `:` between a name and a type"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(p: &[(&str, u32)]) -> BTreeMap<String, GresPool> {
        p.iter().map(|(n, u)| (n.to_string(), GresPool::new(*u))).collect()
    }

    #[test]
    fn requests_parse_like_slurm() {
        assert_eq!(parse_gres("gpu:2").unwrap(), [("gpu".to_string(), 2)].into());
        assert_eq!(parse_gres("gpu:a100:2").unwrap(), [("gpu:a100".to_string(), 2)].into());
        assert_eq!(parse_gres("gpu").unwrap(), [("gpu".to_string(), 1)].into());
        assert_eq!(parse_gres("gpu:1,fpga:2").unwrap().len(), 2);
        assert!(parse_gres("gpu:a:b:c").is_err());
        assert!(parse_gres("gpu:99999").is_err());
        assert!(parse_gres("").is_err());
        assert_eq!(
            parse_licenses("matlab:2,ansys").unwrap(),
            [("ansys".to_string(), 1), ("matlab".to_string(), 2)].into()
        );
        assert!(parse_licenses("matlab@server").is_err());
        assert_eq!(parse_inventory("gpu:a100=4").unwrap(), ("gpu:a100".to_string(), 4));
        assert!(parse_inventory("gpu").is_err());
    }

    #[test]
    fn untyped_requests_take_any_type_typed_only_theirs() {
        let p = pools(&[("gpu:a100", 2), ("gpu:v100", 1)]);
        assert!(serves("gpu:a100", "gpu") && !serves("gpu:a100", "gpu:v100") && !serves("gpux", "gpu"));
        let req: GresRequest = [("gpu".to_string(), 2)].into();
        assert_eq!(choose_pools(&p, &req, |_| 0), Some(vec![("gpu:a100".to_string(), 2)]));
        assert_eq!(
            choose_pools(&p, &req, |n| u32::from(n == "gpu:a100")),
            None,
            "never split"
        );
        let v: GresRequest = [("gpu:v100".to_string(), 1)].into();
        assert_eq!(choose_pools(&p, &v, |_| 0), Some(vec![("gpu:v100".to_string(), 1)]));
        assert!(could_ever_serve(&p, "gpu", 2) && !could_ever_serve(&p, "gpu", 3));
    }

    #[test]
    fn gpu_env_lists_the_granted_indices() {
        let g: GresGrant = vec![("gpu".into(), vec![1, 3]), ("fpga".into(), vec![0])];
        let env: BTreeMap<String, String> = gpu_env(&g).into_iter().collect();
        assert_eq!(env["CUDA_VISIBLE_DEVICES"], "1,3");
        assert_eq!(env["ROCR_VISIBLE_DEVICES"], "1,3");
        assert!(gpu_env(&vec![("fpga".into(), vec![0])]).is_empty());
    }
}

//! Serializes a map with non-string keys as a list of pairs, so JSON (used for the Raft
//! log and snapshots) can hold it.
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Writes the map as `[[k, v], ...]`.
pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(m: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(m.iter())
}

/// Reads `[[k, v], ...]` back into a map.
pub fn deserialize<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<K, V>, D::Error> {
    let pairs: Vec<(K, V)> = Vec::deserialize(d)?;
    Ok(pairs.into_iter().collect())
}

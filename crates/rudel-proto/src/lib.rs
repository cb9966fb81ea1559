//! Generated gRPC code for the `rudel.v1` API, plus the small mapping of shared wire
//! messages to rudel-core types (`convert`).

pub mod convert;

/// The versioned API package `rudel.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("rudel.v1");
}

/// Welcome without its launch key: a session's key must never reach a log.
impl std::fmt::Debug for v1::Welcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Welcome")
            .field("node_name", &self.node_name)
            .field("term", &self.term)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("launch_key", &format_args!("<{} bytes hidden>", self.launch_key.len()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_welcome_never_prints_its_launch_key() {
        let w = super::v1::Welcome {
            node_name: "n1".into(),
            term: 3,
            heartbeat_ms: 1000,
            launch_key: vec![0xab; 32],
        };
        let s = format!(
            "{w:?} {:?}",
            super::v1::HeadMessage {
                msg: Some(super::v1::head_message::Msg::Welcome(w.clone()))
            }
        );
        assert!(s.contains("32 bytes hidden") && s.contains("n1"), "{s}");
        assert!(!s.contains("171") && !s.contains("ab, ab"), "{s}");
    }
}

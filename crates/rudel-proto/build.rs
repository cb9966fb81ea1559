//! Compiles proto/rudel/v1/*.proto with protox (pure Rust), so no system protoc is needed.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "rudel/v1/rudel.proto",
        "rudel/v1/agent.proto",
        "rudel/v1/raft.proto",
        "rudel/v1/enroll.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Welcome carries the session's launch key: its Debug (src/lib.rs) hides it, so a
        // logged message never shows it.
        .skip_debug([".rudel.v1.Welcome"])
        .compile_fds(fds)?;
    Ok(())
}

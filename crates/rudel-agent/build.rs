//! Compiles rudel's PMI-1 client library (crates/rudel-pmi, no dependencies) into
//! `$OUT_DIR/librudel_pmi.so`, which the agent embeds and writes to its data directory:
//! MPI ranks started by srun load it, and a node then needs nothing but the rudel binary.
//! (Cargo cannot depend on another crate's cdylib yet, so rustc is called directly.)
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = PathBuf::from("../rudel-pmi/src");
    println!("cargo:rerun-if-changed={}", src.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("librudel_pmi.so");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args([
        "--crate-name",
        "rudel_pmi",
        "--crate-type",
        "cdylib",
        "--edition",
        "2021",
    ])
    .args(["-C", "opt-level=2", "-C", "strip=debuginfo", "-C", "panic=abort"])
    .arg(src.join("lib.rs"))
    .arg("-o")
    .arg(&out);
    if let (Ok(target), Ok(host)) = (std::env::var("TARGET"), std::env::var("HOST")) {
        if target != host {
            cmd.args(["--target", &target]);
        }
    }
    let status = cmd.status().expect("cannot run rustc to build librudel_pmi.so");
    assert!(
        status.success(),
        "rustc failed to build librudel_pmi.so from {}",
        src.display()
    );
}

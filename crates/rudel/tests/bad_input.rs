//! Bad input gets a clear error (exit 2 for usage problems) and changes nothing; malformed
//! API requests get an error and the head keeps running.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Cluster, Opts};

/// Runs `rudel ARGS`, expects exit 2 and every `needles` in stderr.
fn expect_usage_error(c: &Cluster, args: &[&str], needles: &[&str]) {
    let o = c.rudel(args);
    assert_eq!(o.code, Some(2), "`rudel {}` must exit 2: {o}", args.join(" "));
    for n in needles {
        assert!(
            o.stderr.contains(n),
            "`rudel {}`: stderr should mention {n:?}: {o}",
            args.join(" ")
        );
    }
    assert!(
        o.stdout.trim().is_empty(),
        "`rudel {}` printed to stdout: {o}",
        args.join(" ")
    );
}

fn assert_nothing_submitted(c: &Cluster) {
    let jobs = c.jobs_all();
    assert!(
        jobs.is_empty(),
        "bad input must submit nothing, but jobs --all lists {jobs:#?}"
    );
    let files: Vec<_> = std::fs::read_dir(&c.work)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(files.is_empty(), "bad input left files behind: {files:?}");
}

#[test]
fn malformed_options_exit_2_and_submit_nothing() {
    let c = Cluster::up(Opts::default());
    let cases: &[(&[&str], &[&str])] = &[
        (&["submit", "--mem", "12Q", "--", "true"], &["--mem", "12Q"]),
        (&["submit", "--time", "abc", "--", "true"], &["--time", "abc"]),
        (&["submit", "--array", "5-1", "--", "true"], &["--array", "5-1"]),
        (&["submit", "--array", "1-5%0", "--", "true"], &["--array", "1-5%0"]),
        (&["submit", "--array", "x", "--", "true"], &["--array"]),
        (&["submit", "--cpus", "0", "--", "true"], &["--cpus"]),
        (&["submit", "--cpus", "-1", "--", "true"], &["-1"]),
        (&["submit", "--priority", "high", "--", "true"], &["--priority"]),
        (&["submit", "--env", "NOEQUALS", "--", "true"], &["--env", "NOEQUALS"]),
        (&["submit"], &["no command"]),
        (&["submit", "--"], &["no command"]),
        (&["submit", "--json"], &["no command"]),
        (&["submit", "no-such-script.sh"], &["no-such-script.sh"]),
        (&["run", "--mem", "12Q", "--", "true"], &["--mem", "12Q"]),
        (&["run", "--time", "abc", "--", "echo", "x"], &["--time", "abc"]),
        (&["wait", "1", "--timeout", "xyz"], &["--timeout", "xyz"]),
        (&["show", "abc"], &["abc"]),
        (&["jobs", "--bogus"], &["--bogus"]),
    ];
    for (args, needles) in cases {
        expect_usage_error(&c, args, needles);
    }
    assert_nothing_submitted(&c);
}

#[test]
fn malformed_script_directive_is_rejected() {
    let c = Cluster::up(Opts::default());
    let dir = c.tmp.path().join("scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("bad.sh");
    std::fs::write(&script, "#!/bin/sh\n#RUDEL --mem 12Q\necho hi\n").unwrap();
    let s = script.display().to_string();
    expect_usage_error(&c, &["submit", &s], &["12Q"]);
    std::fs::write(&script, "#!/bin/sh\n#SBATCH --time=abc\necho hi\n").unwrap();
    expect_usage_error(&c, &["submit", &s], &["abc"]);
    assert_nothing_submitted(&c);
}

#[test]
fn unknown_option_is_rejected() {
    let c = Cluster::up(Opts::default());
    expect_usage_error(&c, &["submit", "--bogus"], &["--bogus"]);
    expect_usage_error(&c, &["submit", "--bogus", "--", "true"], &["--bogus"]);
    expect_usage_error(&c, &["submit", "--cpus", "1", "--bogus", "--", "true"], &["--bogus"]);
    expect_usage_error(&c, &["run", "--bogus", "--", "true"], &["--bogus"]);
    assert_nothing_submitted(&c);
}

#[test]
fn request_larger_than_any_node_is_rejected_at_submit() {
    let c = Cluster::up(Opts::default()); // 2 cpus, 2G
    expect_usage_error(&c, &["submit", "--cpus", "64", "--", "true"], &["64 cpus"]);
    expect_usage_error(&c, &["submit", "--mem", "100T", "--", "true"], &["100T"]);
    expect_usage_error(
        &c,
        &["submit", "--mem", "100T", "--array", "1-10", "--", "true"],
        &["100T"],
    );
    expect_usage_error(&c, &["run", "--cpus", "64", "--", "true"], &["64 cpus"]);
    assert_nothing_submitted(&c);
    // A request that fits exactly is fine.
    let id = c.submit(&["--cpus", "2", "--mem", "2G", "--", "true"]);
    let w = c.rudel(&["wait", &id.to_string(), "--timeout", "30s"]);
    assert_eq!(w.code, Some(0), "{w}");
}

#[test]
fn unknown_job_ids_are_errors() {
    let c = Cluster::up(Opts::default());
    for args in [
        &["show", "999999"][..],
        &["show", "999999", "--json"],
        &["cancel", "999999"],
        &["wait", "999999"],
        &["logs", "999999"],
    ] {
        let o = c.rudel(args);
        assert!(o.code.is_some() && !o.ok(), "`rudel {}` must fail: {o}", args.join(" "));
        assert!(
            o.stderr.contains("999999"),
            "`rudel {}` should name the job: {o}",
            args.join(" ")
        );
    }
}

#[test]
fn unreachable_head_is_an_error_not_a_hang() {
    let port = common::free_port();
    // Credentials of some cluster, so the CLI gets as far as dialing.
    let creds = tempfile::tempdir().unwrap();
    let ca = rudel_tls::Ca::generate("test").unwrap();
    rudel_tls::Credentials {
        ca_pem: ca.cert_pem().to_string(),
        identity: None,
    }
    .save(creds.path())
    .unwrap();
    let mut cmd = std::process::Command::new(common::RUDEL);
    cmd.args(["--head", &format!("127.0.0.1:{port}"), "jobs"])
        .env("RUDEL_CREDENTIALS", creds.path())
        .env_remove("RUDEL_HEAD");
    let o = common::run_bounded(cmd, Duration::from_secs(30));
    assert!(!o.timed_out, "{o}");
    assert!(o.code.is_some() && !o.ok(), "{o}");
    assert!(
        o.stderr.contains(&port.to_string()),
        "should say which head it tried: {o}"
    );
}

// ---- raw HTTP/2 + gRPC, by hand ----

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK "literal header field without indexing, new name", no Huffman coding.
fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    assert!(name.len() < 127 && value.len() < 127);
    out.push(0x00);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the server did with our stream 1.
#[derive(Debug, Default)]
struct H2Outcome {
    /// HEADERS frames on stream 1 (the last with END_STREAM: a trailers-only or trailer block).
    headers: usize,
    ended: bool,
    data_bytes: usize,
    rst: bool,
    goaway: bool,
    closed: bool,
    /// The raw HPACK blocks of the HEADERS frames on stream 1.
    blocks: Vec<Vec<u8>>,
}

/// A TLS connection to the head with the admin credentials (what the CLI uses), to send
/// hand-made HTTP/2 through.
fn tls_connect(c: &Cluster) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let creds = rudel_tls::Credentials::load(&c.admin_credentials()).expect("admin credentials");
    let cfg = rudel_tls::client::client_config(&creds).expect("TLS config");
    let name = rustls::pki_types::ServerName::try_from(rudel_tls::HEAD_SERVER_NAME).unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).expect("TLS client");
    let tcp = TcpStream::connect(&c.addr).expect("connect to head");
    tcp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Sends one gRPC request with `grpc_body` (the 5-byte-prefixed message as raw bytes) to
/// `path` and reads the server's frames for up to 10 s.
fn raw_grpc_call(c: &Cluster, path: &str, grpc_body: &[u8]) -> H2Outcome {
    let addr = c.addr.as_str();
    let mut s = tls_connect(c);
    let mut req = PREFACE.to_vec();
    req.extend(frame(4, 0, 0, &[])); // SETTINGS
    let mut hb = Vec::new();
    hpack_literal(&mut hb, ":method", "POST");
    hpack_literal(&mut hb, ":scheme", "http");
    hpack_literal(&mut hb, ":path", path);
    hpack_literal(&mut hb, ":authority", addr);
    hpack_literal(&mut hb, "content-type", "application/grpc");
    hpack_literal(&mut hb, "te", "trailers");
    req.extend(frame(1, 0x4, 1, &hb)); // HEADERS, END_HEADERS
    req.extend(frame(0, 0x1, 1, grpc_body)); // DATA, END_STREAM
    s.write_all(&req).expect("write request");

    let mut out = H2Outcome::default();
    let mut buf: Vec<u8> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !out.ended && !out.rst && !out.goaway {
        let mut chunk = [0u8; 16384];
        match s.read(&mut chunk) {
            Ok(0) => {
                out.closed = true;
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => {
                out.closed = true;
                break;
            }
        }
        while buf.len() >= 9 {
            let len = ((buf[0] as usize) << 16) | ((buf[1] as usize) << 8) | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (ty, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5] & 0x7f, buf[6], buf[7], buf[8]]);
            match (ty, stream) {
                (4, 0) if flags & 1 == 0 => {
                    let _ = s.write_all(&frame(4, 1, 0, &[])); // SETTINGS ACK
                }
                (0, 1) => {
                    out.data_bytes += len;
                    out.ended |= flags & 1 != 0;
                }
                (1, 1) => {
                    out.headers += 1;
                    out.blocks.push(buf[9..9 + len].to_vec());
                    out.ended |= flags & 1 != 0;
                }
                (3, 1) => out.rst = true,
                (7, _) => out.goaway = true,
                _ => {}
            }
            buf.drain(..9 + len);
        }
    }
    out
}

/// The `grpc-status` in the server's header blocks, if it can be read: h2 sends the name
/// as a new literal (Huffman-coded, or plain) and the value as digits, which this decodes.
fn grpc_status(o: &H2Outcome) -> Option<u32> {
    // "grpc-status" Huffman-coded (H bit + length 8), and plain (length 11).
    const HUFF: &[u8] = &[0x88, 0x9a, 0xca, 0xc8, 0xb2, 0x12, 0x34, 0xda, 0x8f];
    let mut plain = vec![11u8];
    plain.extend_from_slice(b"grpc-status");
    for b in &o.blocks {
        for name in [HUFF, &plain[..]] {
            let Some(pos) = b.windows(name.len()).position(|w| w == name) else {
                continue;
            };
            let v = &b[pos + name.len()..];
            let (&first, rest) = v.split_first()?;
            let len = (first & 0x7f) as usize;
            let bytes = rest.get(..len)?;
            if first & 0x80 == 0 {
                return std::str::from_utf8(bytes).ok()?.parse().ok();
            }
            return huffman_digits(bytes)?.parse().ok();
        }
    }
    None
}

/// Decodes a Huffman-coded (RFC 7541) string made of digits only.
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out = String::new();
    let mut i = 0;
    let take = |i: usize, n: usize| -> Option<u32> {
        bits.get(i..i + n)
            .map(|s| s.iter().fold(0u32, |a, &b| a << 1 | b as u32))
    };
    while i < bits.len() {
        if bits[i..].iter().all(|&b| b == 1) && bits.len() - i < 8 {
            break; // padding
        }
        match take(i, 5)? {
            c @ 0..=2 => {
                out.push(char::from(b'0' + c as u8));
                i += 5;
            }
            _ => match take(i, 6)? {
                c @ 0b011001..=0b011111 => {
                    out.push(char::from(b'3' + (c - 0b011001) as u8));
                    i += 6;
                }
                _ => return None,
            },
        }
    }
    Some(out)
}

/// A gRPC message prefix (uncompressed) declaring `len` bytes.
fn grpc_prefix(len: u32) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&len.to_be_bytes());
    v
}

fn assert_head_alive(c: &Cluster) {
    let o = c.rudel(&["nodes"]);
    assert!(
        o.ok() && o.stdout.contains("n1"),
        "head no longer answers `rudel nodes`: {o}\n{}",
        c.logs_tail()
    );
    assert!(c.daemon_alive(), "rudel up died:\n{}", c.logs_tail());
}

trait Alive {
    fn daemon_alive(&self) -> bool;
}

impl Alive for Cluster {
    fn daemon_alive(&self) -> bool {
        // `exited` needs &mut; the pid check is enough here.
        self.daemons
            .iter()
            .all(|d| common::proc_stat(d.child.id() as i32).is_some_and(|(st, _)| st != 'Z'))
    }
}

#[test]
fn malformed_api_requests_get_errors_and_head_survives() {
    let c = Cluster::up(Opts::default());

    // 1. Plain garbage on the gRPC port.
    {
        let mut s = TcpStream::connect(&c.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let garbage: Vec<u8> = (0..64 * 1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let _ = s.write_all(&garbage);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink); // the server should close on us (bounded by the timeout)
    }
    assert_head_alive(&c);

    // 2. HTTP/1.1 instead of HTTP/2.
    {
        let mut s = TcpStream::connect(&c.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    assert_head_alive(&c);

    // Both were refused before TLS, and logged as such.
    let log = c.logs_tail();
    assert!(
        log.contains("refused connection: plain-text HTTP/1") && log.contains("refused connection: not TLS"),
        "plain-text connections should be refused and logged:\n{log}"
    );

    // 3. A valid TLS + HTTP/2 connection whose frames are garbage.
    {
        let mut s = tls_connect(&c);
        let mut req = PREFACE.to_vec();
        req.extend(frame(4, 0, 0, &[]));
        req.extend(frame(0xee, 0xff, 7, b"not a frame"));
        req.extend(frame(1, 0x4, 3, &[0xff; 40])); // HEADERS with an invalid HPACK block
        let _ = s.write_all(&req);
        let mut sink = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match s.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
    }
    assert_head_alive(&c);

    // 4. gRPC Submit whose payload is not a protobuf message: an error status, not a job.
    let mut body = grpc_prefix(64);
    body.extend(std::iter::repeat_n(0xffu8, 64));
    let r = raw_grpc_call(&c, "/rudel.v1.Rudel/Submit", &body);
    eprintln!(
        "Submit with bytes {:02x?}...: grpc-status {:?}",
        &body[..8],
        grpc_status(&r)
    );
    assert!(r.ended || r.rst, "no answer to an invalid protobuf payload: {r:?}");
    if let Some(code) = grpc_status(&r) {
        assert_ne!(code, 0, "an invalid payload got grpc-status 0 (OK)");
    }
    assert_eq!(
        r.data_bytes, 0,
        "an invalid payload must not get a response message: {r:?}"
    );
    assert_head_alive(&c);

    // 5. gRPC Submit declaring a 4 GiB message (far over any limit).
    let mut body = grpc_prefix(u32::MAX - 1);
    body.extend_from_slice(&[0u8; 1024]);
    let r = raw_grpc_call(&c, "/rudel.v1.Rudel/Submit", &body);
    eprintln!(
        "Submit with bytes {:02x?}...: grpc-status {:?}",
        &body[..8],
        grpc_status(&r)
    );
    assert!(
        r.ended || r.rst || r.goaway || r.closed,
        "no answer to an oversized message: {r:?}"
    );
    if let Some(code) = grpc_status(&r) {
        assert_ne!(code, 0, "an oversized payload got grpc-status 0 (OK)");
    }
    assert_eq!(
        r.data_bytes, 0,
        "an oversized request must not get a response message: {r:?}"
    );
    assert_head_alive(&c);

    // 6. An unknown method.
    let r = raw_grpc_call(&c, "/rudel.v1.Rudel/NoSuchMethod", &grpc_prefix(0));
    eprintln!("unknown method: grpc-status {:?}", grpc_status(&r));
    assert!(r.ended || r.rst, "no answer to an unknown method: {r:?}");
    if let Some(code) = grpc_status(&r) {
        assert_eq!(code, 12, "an unknown method should be UNIMPLEMENTED");
    }
    assert_head_alive(&c);

    // 7. The agent-facing service with garbage.
    let mut body = grpc_prefix(16);
    body.extend_from_slice(&[0xff; 16]);
    let _ = raw_grpc_call(&c, "/rudel.v1.AgentLink/Session", &body);
    assert_head_alive(&c);

    // Nothing was submitted, and the cluster still runs jobs.
    assert!(c.jobs_all().is_empty(), "{:#?}", c.jobs_all());
    assert!(c.node_idle(), "the node should still be idle and registered");
    let id = c.submit(&["--", "echo", "ok"]);
    let w = c.rudel(&["wait", &id.to_string(), "--timeout", "30s"]);
    assert_eq!(w.code, Some(0), "{w}");
}

/// A script in the cluster's temp dir (outside the work dir, which must stay empty).
fn script(c: &Cluster, name: &str, body: &[u8]) -> String {
    let dir = c.tmp.path().join("scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

#[test]
fn inputs_that_could_never_run_are_refused_at_submit() {
    let c = Cluster::up(Opts::default());
    let mut nul = b"#!/bin/sh\n#RUDEL --env X=a".to_vec();
    nul.push(0);
    nul.extend_from_slice(b"b\necho hi\n");
    let s = script(&c, "nul.sh", &nul);
    expect_usage_error(&c, &["submit", &s], &["script line 2", "--env X", "NUL"]);

    let big_env = format!("#!/bin/sh\n#RUDEL --env X={}\necho hi\n", "x".repeat(1 << 20));
    let s = script(&c, "bigenv.sh", big_env.as_bytes());
    expect_usage_error(
        &c,
        &["submit", &s],
        &["script line 2", "--env X: value is 1048576 bytes", "131071"],
    );

    let big_name = format!("#!/bin/sh\n#SBATCH --job-name={}\necho hi\n", "n".repeat(200 * 1024));
    let s = script(&c, "bigname.sh", big_name.as_bytes());
    expect_usage_error(
        &c,
        &["submit", &s],
        &["script line 2", "--name", "204800 bytes", "1024"],
    );

    expect_usage_error(
        &c,
        &["submit", "--env", "A B=1", "--", "true"],
        &["--env", "A B", "' '"],
    );
    expect_usage_error(&c, &["submit", "--env", "A\nB=1", "--", "true"], &["--env", "\\n"]);
    expect_usage_error(&c, &["submit", "--name", "a\nb", "--", "true"], &["--name", "\\n"]);
    expect_usage_error(&c, &["submit", "--export", "A B", "--", "true"], &["--export", "A B"]);
    expect_usage_error(
        &c,
        &["submit", "--request-id", "a b", "--", "true"],
        &["request id", "a b"],
    );
    let long_dir = format!("/{}", "d".repeat(5000));
    expect_usage_error(
        &c,
        &["submit", "--chdir", &long_dir, "--", "true"],
        &["--chdir", "PATH_MAX"],
    );

    // Many variables within their own limit, but too many together for exec.
    let mut many = String::from("#!/bin/sh\n");
    for i in 0..12 {
        many.push_str(&format!("#RUDEL --env X{i}={}\n", "x".repeat(100_000)));
    }
    many.push_str("echo hi\n");
    let s = script(&c, "budget.sh", many.as_bytes());
    expect_usage_error(&c, &["submit", &s], &["arguments and environment together", "1048576"]);

    // A script over the spec limit is refused before anything is sent, at once.
    let mut huge = b"#!/bin/sh\n".to_vec();
    huge.extend(std::iter::repeat_n(b'#', 5 << 20));
    let s = script(&c, "huge.sh", &huge);
    let t0 = Instant::now();
    expect_usage_error(
        &c,
        &["submit", &s],
        &["the script is 5.0 MiB", "at most 4 MiB", "keep large inputs in files"],
    );
    let took = t0.elapsed();
    eprintln!("5 MiB script refused in {took:?}");
    assert!(took < Duration::from_secs(3), "refusing a 5 MiB script took {took:?}");
    assert_nothing_submitted(&c);

    // A variable of the submitter's own environment whose name is not valid is left out
    // with a warning (the user did not list it), not an error.
    let mut cmd = c.command_in(&c.work, &["submit", "--json", "--", "true"]);
    cmd.env("A B", "1");
    let o = common::run_bounded(cmd, Duration::from_secs(60));
    assert!(o.ok(), "{o}");
    assert!(o.stderr.contains("not passing the environment variable \"A B\""), "{o}");
}

#[test]
fn a_billion_task_array_and_nul_bytes_in_the_command_are_refused() {
    let c = Cluster::up(Opts::default());
    expect_usage_error(
        &c,
        &["submit", "--array", "0-999999999", "--", "true"],
        &["1000000000 tasks", "10000000"],
    );
    // A NUL cannot reach the CLI through argv, but a script directive can carry one into
    // the job name.
    let mut nul = b"#!/bin/sh\n#SBATCH --job-name=a".to_vec();
    nul.push(0);
    nul.extend_from_slice(b"b\necho hi\n");
    let s = script(&c, "nulname.sh", &nul);
    let o = c.rudel(&["submit", &s]);
    assert_eq!(o.code, Some(2), "{o}");
    assert!(o.stderr.contains("NUL"), "{o}");
    assert_nothing_submitted(&c);
}

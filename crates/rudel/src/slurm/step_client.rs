//! An `srun` outside the job's tasks (in a `salloc` shell, or one that allocated for
//! itself) asks the head directly for its step through the `Step` RPC, instead of an
//! agent's job socket. This bridge speaks the job socket's line protocol on one side
//! (so `srun_step.rs` follows the step the same way whichever way it was asked) and the
//! RPC on the other: the request line becomes the first message, control lines become
//! stdin chunks and kills, and the head's messages become step events.
use base64::Engine;
use rudel_agent::job_socket::{Control, Request, RunStep};
use rudel_agent::steps::StepEvent;
use rudel_proto::v1 as pb;
use rudel_proto::v1::head_message::Msg as HeadMsg;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;

use super::SlurmError;

/// Bytes buffered between srun and the bridge, each way.
const BUFFER: usize = 1 << 20;

/// Opens a step of job `job` through `head`: srun's end of the line protocol. The bridge
/// runs until srun drops its end or the head closes the stream.
pub async fn open(head: &str, job: u64) -> Result<DuplexStream, SlurmError> {
    let client = crate::client::connect(head).await.map_err(|e| {
        SlurmError::msg(format!(
            "cannot reach the head to start the step: {e:#}. Nothing was run"
        ))
    })?;
    let (ours, theirs) = tokio::io::duplex(BUFFER);
    tokio::spawn(bridge(client, job, theirs));
    Ok(ours)
}

fn request(job: u64, s: RunStep) -> pb::StepRequest {
    pb::StepRequest {
        id: 1,
        task: Some(pb::TaskRef {
            job_id: job,
            index: 0,
            attempt: 0,
        }),
        uid: 0,
        argv: s.argv,
        ntasks: s.ntasks,
        nodes: s.nodes,
        ntasks_per_node: s.ntasks_per_node,
        cpus_per_task: s.cpus_per_task,
        nodelist: s.nodelist,
        env: s.env,
        cwd: s.cwd,
        pmi_port: u32::from(s.pmi_port),
        name: s.name,
        input: s.input,
    }
}

/// The step event for one message of the head (None: nothing srun needs).
fn event(m: pb::HeadMessage) -> Option<StepEvent> {
    Some(match m.msg? {
        HeadMsg::StepReply(r) if !r.error.is_empty() => StepEvent::Refused { error: r.error },
        HeadMsg::StepReply(r) => StepEvent::Started {
            step: r.step,
            ntasks: r.ntasks,
            nodelist: r.nodelist,
            task_nodes: r.task_nodes,
        },
        HeadMsg::StepOutput(o) => StepEvent::Output {
            rank: o.rank,
            stream: if o.stream == pb::OutputStream::Stderr as i32 {
                2
            } else {
                1
            },
            data: base64::engine::general_purpose::STANDARD.encode(&o.data),
        },
        HeadMsg::StepTaskEnd(e) => StepEvent::Ended {
            rank: e.rank,
            node: e.node,
            exit_code: e.exit_code,
            signal: e.signal,
            error: e.error,
        },
        HeadMsg::StepStdinAck(a) => StepEvent::StdinAck {
            node: a.node,
            offset: a.offset,
        },
        _ => return None,
    })
}

/// The RPC message for one control line of srun, once the step's id is known.
fn control(job: u64, step: u32, c: Control) -> pb::StepClientMessage {
    use pb::step_client_message::Msg;
    let msg = match c {
        Control::Kill => Msg::Signal(pb::StepSignal {
            job,
            step,
            signal: libc::SIGKILL,
        }),
        Control::Stdin { offset, data, eof } => {
            let (data, eof) = rudel_agent::job_socket::stdin_chunk(&data, eof);
            Msg::Stdin(pb::StepStdin {
                job,
                step,
                offset,
                eof,
                data,
            })
        }
    };
    pb::StepClientMessage { msg: Some(msg) }
}

async fn line<T: serde::Serialize>(w: &mut tokio::io::WriteHalf<DuplexStream>, v: &T) -> std::io::Result<()> {
    let mut l = serde_json::to_vec(v).unwrap_or_default();
    l.push(b'\n');
    w.write_all(&l).await
}

async fn bridge(
    mut client: rudel_proto::v1::rudel_client::RudelClient<tonic::transport::Channel>,
    job: u64,
    end: DuplexStream,
) {
    let (rd, mut wr) = tokio::io::split(end);
    let mut lines = BufReader::new(rd).lines();
    let first = match lines.next_line().await {
        Ok(Some(l)) => l,
        _ => return,
    };
    let Ok(Request::Run(step)) = serde_json::from_str::<Request>(&first) else {
        let _ = line(
            &mut wr,
            &StepEvent::Refused {
                error: "bad step request".into(),
            },
        )
        .await;
        return;
    };
    let (tx, rx) = mpsc::channel(16);
    let first = pb::StepClientMessage {
        msg: Some(pb::step_client_message::Msg::Request(request(job, step))),
    };
    if tx.send(first).await.is_err() {
        return;
    }
    let mut events = match client.step(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            let error = format!("the head refused the step: {}", s.message());
            let _ = line(&mut wr, &StepEvent::Refused { error }).await;
            return;
        }
    };
    let mut step: Option<u32> = None;
    let (mut ntasks, mut ended) = (u32::MAX, 0u32);
    loop {
        tokio::select! {
            m = events.message() => {
                let m = match m {
                    Ok(Some(m)) => m,
                    Ok(None) => return,
                    // The head ended the step (its allocation ended) or the stream broke:
                    // srun says why rather than that the connection was lost.
                    Err(s) => {
                        let error = s.message().to_string();
                        let _ = line(&mut wr, &StepEvent::Refused { error }).await;
                        return;
                    }
                };
                let Some(ev) = event(m) else { continue };
                let last = match &ev {
                    StepEvent::Started { step: s, ntasks: n, .. } => {
                        (step, ntasks) = (Some(*s), *n);
                        *n == 0
                    }
                    StepEvent::Ended { .. } => {
                        ended += 1;
                        ended >= ntasks
                    }
                    StepEvent::Refused { .. } => true,
                    _ => false,
                };
                // After the step's last event srun reads the end of the stream, as from
                // the job socket, which the agent closes then.
                if line(&mut wr, &ev).await.is_err() || last {
                    return;
                }
            }
            l = lines.next_line() => {
                // srun is done (or gone): dropping `tx` closes the stream, which kills a
                // step that still runs.
                let Ok(Some(l)) = l else { return };
                let (Ok(c), Some(s)) = (serde_json::from_str::<Control>(&l), step) else { continue };
                if tx.send(control(job, s, c)).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_messages_become_the_job_sockets_step_events() {
        let reply = |error: &str| pb::HeadMessage {
            msg: Some(HeadMsg::StepReply(pb::StepReply {
                id: 1,
                error: error.into(),
                step: 3,
                ntasks: 2,
                nodelist: "n[1-2]".into(),
                task_nodes: vec!["n1".into(), "n2".into()],
            })),
        };
        assert!(matches!(
            event(reply("")),
            Some(StepEvent::Started { step: 3, ntasks: 2, .. })
        ));
        assert!(matches!(event(reply("no")), Some(StepEvent::Refused { .. })));
        let out = pb::HeadMessage {
            msg: Some(HeadMsg::StepOutput(pb::StepOutput {
                job: 1,
                step: 3,
                rank: 1,
                stream: pb::OutputStream::Stderr as i32,
                data: b"hi".to_vec(),
            })),
        };
        assert_eq!(
            event(out),
            Some(StepEvent::Output {
                rank: 1,
                stream: 2,
                data: "aGk=".into()
            })
        );
        let m = control(
            7,
            3,
            Control::Stdin {
                offset: 5,
                data: "!!".into(),
                eof: false,
            },
        );
        let Some(pb::step_client_message::Msg::Stdin(s)) = m.msg else {
            panic!("{m:?}")
        };
        assert!(s.eof && s.data.is_empty(), "undecodable stdin ends the stream: {s:?}");
    }
}

//! Raft transport between heads over gRPC (`rudel.v1.RaftPeer`): openraft messages are
//! carried as JSON payloads. Every call has a timeout; an unreachable peer is reported to
//! openraft, which retries with backoff.
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use rudel_proto::v1::raft_peer_client::RaftPeerClient;
use rudel_proto::v1::raft_peer_server::RaftPeer;
use rudel_proto::v1::RaftPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tonic::transport::Channel;
use tonic::{Request, Status};

use super::{HeadId, Raft, TypeConfig};

/// The TLS client configuration heads use towards each other (their own head
/// certificate); set once the head's credentials are known, which is after Raft starts.
pub type PeerTls = Arc<OnceLock<Arc<rustls::ClientConfig>>>;

/// Open channels to peer heads, by address. openraft asks for a new client for every
/// replication stream, election and leadership check (each linearizable read); sharing
/// one HTTP/2 connection per peer saves a TLS handshake (two P-256 signatures and a key
/// exchange on each side) for each of those.
type Channels = Arc<Mutex<HashMap<String, RaftPeerClient<Channel>>>>;

/// Creates clients to peer heads.
#[derive(Clone, Default)]
pub struct Network {
    pub tls: PeerTls,
    channels: Channels,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: HeadId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            tls: self.tls.clone(),
            client: None,
            channels: self.channels.clone(),
        }
    }
}

/// A lazily connected gRPC client to one peer.
pub struct PeerClient {
    target: HeadId,
    addr: String,
    tls: PeerTls,
    client: Option<RaftPeerClient<Channel>>,
    channels: Channels,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<HeadId, BasicNode, RaftError<HeadId, E>>;

impl PeerClient {
    async fn client(&mut self) -> Result<RaftPeerClient<Channel>, Unreachable> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        if let Some(c) = self.channels.lock().ok().and_then(|m| m.get(&self.addr).cloned()) {
            self.client = Some(c.clone());
            return Ok(c);
        }
        let tls = self
            .tls
            .get()
            .cloned()
            .ok_or_else(|| Unreachable::new(&std::io::Error::other("head credentials not loaded yet")))?;
        let ep = rudel_tls::client::endpoint(&self.addr)
            .map_err(|e| Unreachable::new(&e))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        let ch = rudel_tls::client::connect(&ep, tls)
            .await
            .map_err(|e| Unreachable::new(&e))?;
        let c = RaftPeerClient::new(ch)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        self.client = Some(c.clone());
        if let Ok(mut m) = self.channels.lock() {
            m.insert(self.addr.clone(), c.clone());
        }
        Ok(c)
    }

    /// Forgets the connection after a failed call, so the next call dials again.
    fn forget(&mut self) {
        self.client = None;
        if let Ok(mut m) = self.channels.lock() {
            m.remove(&self.addr);
        }
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &mut self,
        which: Rpc,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<HeadId, BasicNode, RaftError<HeadId, E>>> {
        let data = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut c = self.client().await.map_err(RPCError::Unreachable)?;
        let mut request = Request::new(RaftPayload { data });
        request.set_timeout(timeout);
        let fut = match which {
            Rpc::Append => c.append_entries(request).await,
            Rpc::Vote => c.vote(request).await,
            Rpc::Snapshot => c.install_snapshot(request).await,
        };
        let payload = match fut {
            Ok(r) => r.into_inner(),
            Err(status) => {
                self.forget();
                tracing::debug!(target_head = self.target, error = %status, "raft rpc failed");
                return Err(RPCError::Unreachable(Unreachable::new(&status)));
            }
        };
        let res: Result<Resp, RaftError<HeadId, E>> =
            serde_json::from_slice(&payload.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

#[derive(Copy, Clone)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<HeadId>, RpcErr> {
        self.call(Rpc::Append, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<HeadId>, RpcErr<InstallSnapshotError>> {
        self.call(Rpc::Snapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(&mut self, rpc: VoteRequest<HeadId>, option: RPCOption) -> Result<VoteResponse<HeadId>, RpcErr> {
        self.call(Rpc::Vote, &rpc, option.hard_ttl()).await
    }
}

/// Server side of the Raft transport: hands peer messages to the local Raft.
pub struct PeerService {
    pub raft: Raft,
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("bad raft payload: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<tonic::Response<RaftPayload>, Status> {
    serde_json::to_vec(v)
        .map(|data| tonic::Response::new(RaftPayload { data }))
        .map_err(|e| Status::internal(format!("encode raft payload: {e}")))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, req: Request<RaftPayload>) -> Result<tonic::Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req)?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<tonic::Response<RaftPayload>, Status> {
        let rpc: VoteRequest<HeadId> = decode(req)?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<RaftPayload>) -> Result<tonic::Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req)?;
        encode(&self.raft.install_snapshot(rpc).await)
    }
}

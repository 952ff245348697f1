//! An in-process hostd on a private libvirt test-driver instance, reached over real gRPC,
//! and the controller's side of a session (Hello, then grants for lease requests) so that
//! tests can hold, withhold and observe the host's lease exactly as a leader would.

use std::future::Future;
use std::time::Duration;

use drover_hostd::{Config, HostdError};
use drover_proto::agent::v1::host_agent_client::HostAgentClient;
use drover_proto::agent::v1::session_event::Kind as EventKind;
use drover_proto::agent::v1::session_request::Kind as RequestKind;
use drover_proto::agent::v1::{
    Domain, DomainState, Fence, Heartbeat, Hello, LeaseGrant, ListDomainsRequest, SessionEvent,
    SessionRequest, StartVmRequest, VmRef,
};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

pub const WAIT: Duration = Duration::from_secs(10);

/// A private test-driver host: 8 CPUs, 16 GiB, and one foreign domain named `test`, like
/// `test:///default` has.
pub const NODE_XML: &str = "<node>
  <cpu>
    <mhz>2000</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets>
    <cores>8</cores><threads>1</threads><active>8</active>
  </cpu>
  <memory>16777216</memory>
  <domain type='test'>
    <name>test</name>
    <memory unit='MiB'>128</memory>
    <vcpu>1</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
  </domain>
</node>
";

pub struct Hostd {
    pub client: HostAgentClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<drover_hostd::Ended, HostdError>>,
    pub uri: String,
    pub dir: TempDir,
    /// The granting session opened at start, if any; dropping it stops the grants.
    pub leader: Option<Leader>,
}

impl Hostd {
    /// Starts hostd on a private test-driver instance, with a leader of term 1 granting
    /// it long leases (so that starts are allowed).
    pub async fn private(name: &str) -> Hostd {
        let (uri, dir) = private_uri();
        Hostd::start(name, uri, dir).await
    }

    pub async fn start(name: &str, uri: String, dir: TempDir) -> Hostd {
        let data_dir = dir.path().join("data");
        let mut hostd = Hostd::start_with(name, uri, dir, data_dir).await;
        hostd.hold_lease(1).await;
        hostd
    }

    /// Starts hostd with its state in `data_dir` (which outlives it, for restarts), with
    /// no session and so no lease beyond one a previous hostd left in `data_dir`.
    pub async fn start_at(uri: &str, data_dir: &std::path::Path) -> Hostd {
        let dir = tempfile::tempdir().expect("tempdir");
        Hostd::start_with("fencing", uri.to_string(), dir, data_dir.to_path_buf()).await
    }

    pub async fn start_with(
        name: &str,
        uri: String,
        dir: TempDir,
        data_dir: std::path::PathBuf,
    ) -> Hostd {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let mut config = Config::new(name, uri.clone(), data_dir);
        config.heartbeat_interval = Duration::from_millis(500);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(drover_hostd::run(config, listener, async {
            let _ = stopped.await;
        }));
        let client = within(
            "connect",
            HostAgentClient::connect(format!("http://{addr}")),
        )
        .await
        .expect("connect to hostd");
        Hostd {
            client,
            stop: Some(stop),
            task,
            uri,
            dir,
            leader: None,
        }
    }

    /// Opens a session as leader of `term` that grants every lease request a 60 s lease,
    /// and waits until hostd reports the lease held.
    pub async fn hold_lease(&mut self, term: u64) {
        let leader = Leader::open(&mut self.client, term, Duration::from_secs(60)).await;
        leader.wait_held(true).await;
        self.leader = Some(leader);
    }

    /// Waits for hostd to stop by itself (a stop-agent drill); returns why it did, and its
    /// directory (which would go with it).
    pub async fn ended(mut self) -> (drover_hostd::Ended, TempDir) {
        self.leader.take();
        let ended = within("hostd to end", self.task)
            .await
            .expect("hostd task panicked")
            .expect("hostd returned an error");
        (ended, self.dir)
    }

    /// Stops hostd and checks that it stopped cleanly.
    pub async fn shutdown(mut self) {
        self.leader.take();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        within("hostd to stop", self.task)
            .await
            .expect("hostd task panicked")
            .expect("hostd returned an error");
    }

    pub async fn list(&mut self) -> Vec<Domain> {
        self.client
            .list_domains(ListDomainsRequest {})
            .await
            .expect("ListDomains")
            .into_inner()
            .domains
    }
}

/// A fresh private test-driver URI, in a directory the caller keeps.
pub fn private_uri() -> (String, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = dir.path().join("node.xml");
    std::fs::write(&node, NODE_XML).expect("write node.xml");
    (format!("test://{}", node.display()), dir)
}

/// The controller's half of one session: answers lease requests with grants of `ttl`
/// (while granting is on) and publishes every heartbeat.
pub struct Leader {
    granting: watch::Sender<bool>,
    /// Whether grants say disarmed, and the HA epoch they carry (bumped on every switch).
    disarmed: watch::Sender<(bool, u64)>,
    beats: watch::Receiver<Option<Heartbeat>>,
    /// The highest grant seq sent so far.
    granted: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Leader {
    pub async fn open(client: &mut HostAgentClient<Channel>, term: u64, ttl: Duration) -> Leader {
        Self::open_granting(client, term, ttl, true).await
    }

    /// Opens a session that answers lease requests only if `granting` (see `set_granting`).
    pub async fn open_granting(
        client: &mut HostAgentClient<Channel>,
        term: u64,
        ttl: Duration,
        granting: bool,
    ) -> Leader {
        let (requests, outbound) = mpsc::channel(16);
        requests.send(hello(term, 100)).await.expect("queue Hello");
        let events = within(
            "session to open",
            client.session(ReceiverStream::new(outbound)),
        )
        .await
        .expect("Session")
        .into_inner();
        let (granting, granting_rx) = watch::channel(granting);
        let (disarmed, disarmed_rx) = watch::channel((false, 0));
        let (beats_tx, beats) = watch::channel(None);
        let (granted_tx, granted) = watch::channel(0);
        let task = tokio::spawn(serve_session(
            events,
            requests,
            Grants {
                term,
                ttl,
                on: granting_rx,
                disarmed: disarmed_rx,
                sent: granted_tx,
            },
            beats_tx,
        ));
        Leader {
            granting,
            disarmed,
            beats,
            granted,
            task,
        }
    }

    /// Stops (or resumes) answering lease requests; the session stays open.
    pub fn set_granting(&self, on: bool) {
        self.granting.send_replace(on);
    }

    /// Makes the following grants say HA is disarmed (or armed), under a new HA epoch;
    /// returns the epoch.
    pub fn set_disarmed(&self, disarmed: bool) -> u64 {
        let mut epoch = 0;
        self.disarmed.send_modify(|(d, e)| {
            *d = disarmed;
            *e += 1;
            epoch = *e;
        });
        epoch
    }

    /// The highest seq of the grants this leader has sent.
    pub fn highest_grant(&self) -> u64 {
        *self.granted.borrow()
    }

    /// Waits for a heartbeat reporting the lease `held` (or not).
    pub async fn wait_held(&self, held: bool) -> Heartbeat {
        self.wait_beat(|b| b.lease.is_some_and(|l| l.held == held))
            .await
    }

    /// Waits for a heartbeat, sent after this call, satisfying `pred` and returns it.
    /// Only fresh beats count: the last one seen may predate whatever the test just did.
    pub async fn wait_beat(&self, pred: impl Fn(&Heartbeat) -> bool) -> Heartbeat {
        let mut beats = self.beats.clone();
        beats.mark_unchanged();
        within("a matching heartbeat", async {
            loop {
                beats.changed().await.expect("session task alive");
                if let Some(beat) = beats.borrow_and_update().as_ref().filter(|b| pred(b)) {
                    return beat.clone();
                }
            }
        })
        .await
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // Ends the session: hostd sees the request stream close.
        self.task.abort();
    }
}

/// What the test leader answers lease requests with.
struct Grants {
    term: u64,
    ttl: Duration,
    on: watch::Receiver<bool>,
    disarmed: watch::Receiver<(bool, u64)>,
    sent: watch::Sender<u64>,
}

async fn serve_session(
    mut events: Streaming<SessionEvent>,
    requests: mpsc::Sender<SessionRequest>,
    grants: Grants,
    beats: watch::Sender<Option<Heartbeat>>,
) {
    while let Ok(Some(event)) = events.message().await {
        match event.kind {
            Some(EventKind::Heartbeat(beat)) => {
                beats.send_replace(Some(beat));
            }
            Some(EventKind::LeaseRequest(req)) if *grants.on.borrow() => {
                let (disarmed, ha_epoch) = *grants.disarmed.borrow();
                let grant = SessionRequest {
                    kind: Some(RequestKind::Grant(LeaseGrant {
                        seq: req.seq,
                        term: grants.term,
                        ttl_ms: grants.ttl.as_millis() as u64,
                        disarmed,
                        ha_epoch,
                    })),
                };
                // Noted before it leaves: hostd may name it in a beat at once.
                grants.sent.send_replace(req.seq);
                if requests.send(grant).await.is_err() {
                    return;
                }
            }
            Some(EventKind::LeaseRequest(_)) | None => {}
        }
    }
}

pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

pub fn start_req(name: &str, generation: u64) -> StartVmRequest {
    StartVmRequest {
        name: name.to_string(),
        vcpus: 2,
        memory_mib: 128,
        fence: Some(Fence {
            term: 1,
            generation,
        }),
        ha: false,
        ..Default::default()
    }
}

pub fn vm_ref(name: &str) -> VmRef {
    vm_ref_at(name, 0)
}

/// A reference carrying `generation`: hostd refuses one older than the domain's.
pub fn vm_ref_at(name: &str, generation: u64) -> VmRef {
    VmRef {
        name: name.to_string(),
        fence: Some(Fence {
            term: 1,
            generation,
        }),
        stray: false,
        ..Default::default()
    }
}

/// The session's opening message from leader `term`.
pub fn hello(term: u64, heartbeat_interval_ms: u64) -> SessionRequest {
    SessionRequest {
        kind: Some(RequestKind::Hello(Hello {
            term,
            leader_id: 1,
            heartbeat_interval_ms,
        })),
    }
}

pub fn state(domain: &Domain) -> DomainState {
    DomainState::try_from(domain.state).unwrap_or(DomainState::Unspecified)
}

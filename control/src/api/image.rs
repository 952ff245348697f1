//! `drover.v1.ImageService`: images, imported through the leader. An import is three
//! steps: `BeginImageImport` takes the name and picks the host (`scheduler::import_host`),
//! the file streams from the client through this leader to that host's hostd, and
//! `FinishImageImport` records what the host found. A failure marks the image deleting, and
//! the host actor deletes whatever the host kept; an import whose leader died is abandoned
//! the same way by the next leader (see `drover_actors::host::images`).

use drover_actors::scheduler::{import_host, ImportRefusal};
use drover_actors::{upload_deadline, AgentPool};
use drover_proto::agent::v1 as agent;
use drover_proto::v1 as pb;
use drover_proto::v1::image_service_server::ImageService;
use drover_proto::v1::import_image_chunk::Part;
use drover_raft::model::{Image, ImageCopy, ImageFormat, ImageState};
use drover_raft::{Command, ImageImported, RaftNode, Reply, Request as RaftRequest};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::cluster::{applied, fresh_read, read_response};
use super::errors::{committed, leader_only};
use super::http_source;
use super::write::commit;

pub struct ImageApi {
    node: RaftNode,
    agents: AgentPool,
}

impl ImageApi {
    pub fn new(node: RaftNode, agents: AgentPool) -> Self {
        Self { node, agents }
    }

    /// Commits `cmd` here, as the leader of the import (never forwarded: this node streams
    /// the file, so it must be the one the host admits).
    async fn commit_here(&self, cmd: Command) -> Result<Reply, Status> {
        committed(self.node.write_local(RaftRequest::anonymous(cmd)).await)
    }
}

/// Marks an import's image deleting unless disarmed, also when the handler is dropped
/// mid-way (the client went away: tonic drops the handler's future), so that the image's
/// host deletes whatever it kept and the name becomes free again.
struct Abandon {
    node: RaftNode,
    /// The image's name and volume; `None` once disarmed.
    image: Option<(String, String)>,
}

impl Abandon {
    fn disarm(mut self) {
        self.image = None;
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        let Some((name, volume)) = self.image.take() else {
            return;
        };
        let node = self.node.clone();
        tokio::spawn(async move {
            // Only this import's image: the name may have been deleted and imported again.
            let cmd = Command::DeleteImage {
                name: name.clone(),
                volume: Some(volume),
            };
            if let Err(e) = node.write_local(RaftRequest::anonymous(cmd)).await {
                // A later leader abandons it (its term is older) and deletes the volume.
                tracing::warn!(image = %name, error = %e, "cannot mark a failed import deleting");
            }
        });
    }
}

pub fn to_pb(image: &Image) -> pb::Image {
    let mut out = pb::Image {
        name: image.name.clone(),
        pool: image.pool.clone(),
        volume: image.volume.clone(),
        host: image.host.clone(),
        state: image.state.as_str().into(),
        copies: image
            .copies
            .iter()
            .map(|(host, c)| {
                let state = match c {
                    ImageCopy::Copying { .. } => "copying",
                    ImageCopy::Ready => "ready",
                };
                (host.clone(), state.to_string())
            })
            .collect(),
        ..Default::default()
    };
    if let ImageState::Ready {
        format,
        virtual_bytes,
        file_bytes,
        sha256,
    } = &image.state
    {
        out.format = format.as_str().into();
        out.virtual_bytes = *virtual_bytes;
        out.file_bytes = *file_bytes;
        out.sha256 = sha256.clone();
    }
    out
}

/// Chunks of an import's bytes buffered between their source and the host.
const CHUNKS_IN_FLIGHT: usize = 16;

/// Moves the data messages of an import's stream after its header to `tx`, until the
/// stream ends, breaks or sends anything else (then the host sees a short file and
/// refuses it), or the upload stops taking them.
async fn pump_client(mut stream: Streaming<pb::ImportImageChunk>, tx: mpsc::Sender<Vec<u8>>) {
    while let Ok(Some(pb::ImportImageChunk {
        part: Some(Part::Data(data)),
    })) = stream.message().await
    {
        if tx.send(data).await.is_err() {
            return;
        }
    }
}

/// The same for a URL's body.
async fn pump_source(source: http_source::Source, tx: mpsc::Sender<Vec<u8>>) {
    let mut chunks = std::pin::pin!(source.chunks());
    while let Some(data) = chunks.next().await {
        if tx.send(data).await.is_err() {
            return;
        }
    }
}

fn upload_chunk(data: Vec<u8>) -> agent::UploadImageChunk {
    agent::UploadImageChunk {
        part: Some(agent::upload_image_chunk::Part::Data(data)),
    }
}

/// hostd's refusal as the client should see it: what was wrong with the file stays
/// `InvalidArgument`, a host that cannot store it `FailedPrecondition`; the rest means the
/// host could not finish (`Aborted`: not `Unavailable`, which clients retry at once, while
/// the failed image's name is only free again once its host deleted what it kept).
fn host_status(host: &str, s: Status) -> Status {
    let msg = format!("Host {host}: {}", s.message());
    match s.code() {
        Code::InvalidArgument => Status::invalid_argument(msg),
        Code::FailedPrecondition => Status::failed_precondition(msg),
        _ => Status::aborted(msg),
    }
}

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn import_image(
        &self,
        req: Request<Streaming<pb::ImportImageChunk>>,
    ) -> Result<Response<pb::Image>, Status> {
        let mut stream = req.into_inner();
        let header = match stream.message().await? {
            Some(pb::ImportImageChunk {
                part: Some(Part::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "The first message of an import must be its header",
                ))
            }
        };
        leader_only(&self.node)?;
        let metrics = self.node.metrics();
        // The bytes, from the client's stream or the URL, through a channel: the upload
        // below only ever sees a stream of chunks.
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let size = if header.url.is_empty() {
            tokio::spawn(pump_client(stream, tx));
            header.size_bytes
        } else {
            let source = http_source::get(header.url.clone()).await?;
            let size = source.size;
            tokio::spawn(pump_source(source, tx));
            size
        };
        if size == 0 {
            return Err(Status::invalid_argument("The image file is empty"));
        }
        let host = self
            .node
            .view()
            .read(|d| import_host(&d.state, &header.pool, size))
            .map_err(|e| match e {
                ImportRefusal::UnknownPool(_) => Status::not_found(e.to_string()),
                ImportRefusal::NoHost { .. } => Status::failed_precondition(e.to_string()),
            })?;
        let begin = Command::BeginImageImport {
            name: header.name.clone(),
            pool: header.pool.clone(),
            host: host.clone(),
            term: metrics.current_term,
        };
        let Reply::Image(image) = self.commit_here(begin).await? else {
            return Err(Status::internal(
                "BeginImageImport answered without an image",
            ));
        };
        tracing::info!(image = %image.name, host = %host, pool = %image.pool, bytes = size, term = metrics.current_term, "importing image");
        let abandon = Abandon {
            node: self.node.clone(),
            image: Some((image.name.clone(), image.volume.clone())),
        };
        let address = self
            .node
            .view()
            .read(|d| d.state.hosts.get(&host).map(|h| h.address.clone()));
        let upload_header = agent::UploadImageChunk {
            part: Some(agent::upload_image_chunk::Part::Header(
                agent::UploadImageHeader {
                    pool: image.pool.clone(),
                    volume: image.volume.clone(),
                    size_bytes: size,
                    term: metrics.current_term,
                },
            )),
        };
        let data = ReceiverStream::new(rx).map(upload_chunk);
        let outbound = futures::stream::iter([upload_header]).chain(data);
        let uploaded = match address.map(|a| self.agents.bulk_client(&a)) {
            Some(Ok(mut client)) => {
                let mut call = tonic::Request::new(outbound);
                call.set_timeout(upload_deadline(size));
                client
                    .upload_image(call)
                    .await
                    .map(Response::into_inner)
                    .map_err(|s| host_status(&host, s))
            }
            Some(Err(e)) => Err(Status::aborted(format!("Host {host}: {e}"))),
            None => Err(Status::aborted(format!("Host {host} is gone"))),
        };
        let uploaded = match uploaded {
            Ok(u) => u,
            Err(s) => {
                tracing::warn!(image = %image.name, host = %host, error = %s.message(), "image import failed");
                return Err(s);
            }
        };
        let Some(format) = ImageFormat::parse(&uploaded.format) else {
            return Err(Status::internal(format!(
                "Host {host} reported format {:?}",
                uploaded.format
            )));
        };
        let finish = Command::FinishImageImport(ImageImported {
            name: image.name.clone(),
            volume: image.volume.clone(),
            format,
            virtual_bytes: uploaded.virtual_bytes,
            file_bytes: uploaded.file_bytes,
            sha256: uploaded.sha256,
        });
        // Refused (deleted meanwhile, leadership lost): the image is not ready, and its
        // volume goes with the abandoned import.
        match self.commit_here(finish).await? {
            Reply::Image(ready) => {
                abandon.disarm();
                Ok(Response::new(to_pb(&ready)))
            }
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn get_image(
        &self,
        req: Request<pb::GetImageRequest>,
    ) -> Result<Response<pb::Image>, Status> {
        let req = req.into_inner();
        fresh_read(&self.node, req.stale).await?;
        let (index, image) = self
            .node
            .view()
            .read(|d| (applied(d), d.state.images.get(&req.name).map(to_pb)));
        let image =
            image.ok_or_else(|| Status::not_found(format!("Image {:?} not found", req.name)))?;
        Ok(read_response(&self.node, index, image))
    }

    async fn list_images(
        &self,
        req: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        fresh_read(&self.node, req.into_inner().stale).await?;
        let (index, images) = self
            .node
            .view()
            .read(|d| (applied(d), d.state.images.values().map(to_pb).collect()));
        Ok(read_response(
            &self.node,
            index,
            pb::ListImagesResponse { images },
        ))
    }

    async fn delete_image(
        &self,
        req: Request<pb::DeleteImageRequest>,
    ) -> Result<Response<pb::Image>, Status> {
        let (meta, _, req) = req.into_parts();
        match commit(
            &self.node,
            &meta,
            Command::DeleteImage {
                name: req.name,
                volume: None,
            },
        )
        .await?
        {
            Reply::Image(i) => Ok(Response::new(to_pb(&i))),
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }
}

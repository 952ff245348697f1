//! `HostAgent`'s image calls: take an uploaded file into a pool through libvirt, hashing
//! it on the way, then have `qemu-img` say what it is; delete a volume. Any failure after
//! the volume exists deletes it again, so a failed import leaves nothing here. And read a
//! volume out (what the leader copies an image to another host with).

use drover_proto::agent::v1 as pb;
use drover_proto::agent::v1::upload_image_chunk::Part;
use drover_proto::identity::valid_name;
use ring::digest::{Context, SHA256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::info;

use super::AgentService;
use crate::error::HostdError;
use crate::image_check;

/// Chunks buffered between the gRPC stream and the blocking upload.
const CHUNKS_IN_FLIGHT: usize = 16;

fn check_names(pool: &str, volume: &str) -> Result<(), HostdError> {
    for (what, name) in [("pool", pool), ("volume", volume)] {
        if !valid_name(name) {
            return Err(HostdError::InvalidArgument(format!(
                "{what} name {name:?} must be 1-128 of A-Z a-z 0-9 . _ -"
            )));
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Moves the stream's data chunks to the blocking side until it ends, breaks, or the
/// blocking side stops listening (it failed).
async fn forward(
    mut stream: Streaming<pb::UploadImageChunk>,
    tx: mpsc::Sender<Result<Vec<u8>, HostdError>>,
) {
    loop {
        let item = match stream.message().await {
            Ok(None) => return,
            Ok(Some(pb::UploadImageChunk {
                part: Some(Part::Data(data)),
            })) => Ok(data),
            Ok(Some(_)) => Err(HostdError::InvalidArgument(
                "only the first message may be a header".into(),
            )),
            Err(s) => Err(HostdError::InvalidArgument(format!(
                "the upload broke off: {}",
                s.message()
            ))),
        };
        let last = item.is_err();
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}

impl AgentService {
    pub(super) async fn upload_image_inner(
        &self,
        mut stream: Streaming<pb::UploadImageChunk>,
    ) -> Result<pb::UploadedImage, Status> {
        let op = "UploadImage";
        let header = match stream.message().await? {
            Some(pb::UploadImageChunk {
                part: Some(Part::Header(h)),
            }) => h,
            _ => {
                return Err(self.failed(op, "")(HostdError::InvalidArgument(
                    "the first message must be the header".into(),
                )))
            }
        };
        let volume = header.volume.clone();
        check_names(&header.pool, &volume).map_err(self.failed(op, &volume))?;
        if header.size_bytes == 0 {
            return Err(self.failed(op, &volume)(HostdError::InvalidArgument(
                "the file is empty".into(),
            )));
        }
        self.admit_pool_term(op, &volume, header.term).await?;
        info!(host = %self.host(), pool = %header.pool, volume = %volume, bytes = header.size_bytes, term = header.term, "UploadImage");

        let (tx, mut rx) = mpsc::channel::<Result<Vec<u8>, HostdError>>(CHUNKS_IN_FLIGHT);
        let (pool, vol, size) = (header.pool.clone(), volume.clone(), header.size_bytes);
        // Hashing on the blocking thread too: it is the CPU work of the upload.
        let upload = self.shared.blocking(move |hv| {
            let mut hash = Context::new(&SHA256);
            let mut chunks = std::iter::from_fn(|| rx.blocking_recv()).inspect(|c| {
                if let Ok(data) = c {
                    hash.update(data);
                }
            });
            let path = hv.upload_volume(&pool, &vol, size, &mut chunks)?;
            drop(chunks);
            let sha256 = hex(hash.finish().as_ref());
            let inspected = image_check::inspect(&path);
            match inspected {
                Ok(found) => Ok((found, sha256)),
                Err(e) => {
                    if let Err(d) = hv.delete_volume(&pool, &vol) {
                        tracing::warn!(pool = %pool, volume = %vol, error = %d, "cannot delete a refused image's volume");
                    }
                    Err(e)
                }
            }
        });
        let (result, ()) = tokio::join!(upload, forward(stream, tx));
        let (found, sha256) = result.map_err(self.failed(op, &volume))?;
        info!(host = %self.host(), volume = %volume, format = found.format, virtual_bytes = found.virtual_bytes, "image stored");
        Ok(pb::UploadedImage {
            format: found.format.to_string(),
            virtual_bytes: found.virtual_bytes,
            file_bytes: header.size_bytes,
            sha256,
        })
    }

    pub(super) async fn delete_volume_inner(
        &self,
        req: pb::DeleteVolumeRequest,
    ) -> Result<pb::DeleteVolumeResponse, Status> {
        let op = "DeleteVolume";
        check_names(&req.pool, &req.volume).map_err(self.failed(op, &req.volume))?;
        self.admit_pool_term(op, &req.volume, req.term).await?;
        info!(host = %self.host(), pool = %req.pool, volume = %req.volume, term = req.term, "DeleteVolume");
        let (pool, volume) = (req.pool.clone(), req.volume.clone());
        let existed = self
            .shared
            .blocking(move |hv| hv.delete_volume(&pool, &volume))
            .await
            .map_err(self.failed(op, &req.volume))?;
        Ok(pb::DeleteVolumeResponse { existed })
    }

    pub(super) async fn read_volume_inner(
        &self,
        req: pb::ReadVolumeRequest,
    ) -> Result<ReceiverStream<Result<pb::VolumeChunk, Status>>, Status> {
        let op = "ReadVolume";
        check_names(&req.pool, &req.volume).map_err(self.failed(op, &req.volume))?;
        self.admit_pool_term(op, &req.volume, req.term).await?;
        info!(host = %self.host(), pool = %req.pool, volume = %req.volume, term = req.term, "ReadVolume");
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let (pool, volume) = (req.pool.clone(), req.volume.clone());
        let hv = std::sync::Arc::clone(&self.shared.hypervisor);
        tokio::task::spawn_blocking(move || {
            let result = hv.read_volume(&pool, &volume, &mut |data| {
                tx.blocking_send(Ok(pb::VolumeChunk { data })).is_ok()
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(Status::from(e)));
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

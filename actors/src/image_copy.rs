//! Copying an image to a host that has no copy of it yet (its pool is not shared), before
//! a VM cloned from it starts or arrives there: the leader commits `BeginImageCopy`,
//! streams the volume from the image's host (`ReadVolume`) into the new host's
//! `UploadImage` (same pool, same volume name, so a clone's backing path is the same on
//! every host), checks that what arrived has the image's checksum, and commits
//! `FinishImageCopy`. A VM's actor calls it before a start, a migration's actor before the
//! migration. A copy whose leader dies stays `Copying` under the old term; the new host's
//! actor deletes what arrived and forgets it (`host::images`), and the next start copies
//! again.

use drover_proto::agent::v1 as agent;
use drover_proto::agent::v1::upload_image_chunk::Part;
use drover_raft::model::ImageState;
use drover_raft::{Command, RaftNode, Reply, Request};
use futures::StreamExt;

use crate::agents::{deadline, upload_deadline, AgentPool, QUICK_CALL};

/// What the copy needs from the state.
struct Source {
    pool: String,
    volume: String,
    size: u64,
    sha256: String,
    from: String,
    from_addr: String,
    to_addr: String,
}

/// Copies image `image` to `host` for the leader of `term`. `Ok` once the copy is ready
/// there (also when it was already); `Err` says why not (another copy under way, a host
/// that cannot be reached, a checksum that does not match).
pub async fn copy(
    node: &RaftNode,
    agents: &AgentPool,
    term: u64,
    image: &str,
    host: &str,
) -> Result<(), String> {
    let src = node.view().read(|d| {
        let i = d.state.images.get(image)?;
        let ImageState::Ready {
            file_bytes, sha256, ..
        } = &i.state
        else {
            return None;
        };
        let addr = |h: &str| d.state.hosts.get(h).map(|h| h.address.clone());
        Some((
            i.ready_on(host),
            Source {
                pool: i.pool.clone(),
                volume: i.volume.clone(),
                size: *file_bytes,
                sha256: sha256.clone(),
                from: i.host.clone(),
                from_addr: addr(&i.host)?,
                to_addr: addr(host)?,
            },
        ))
    });
    let Some((there, src)) = src else {
        return Err(format!("image {image} is not ready, or a host is gone"));
    };
    if there {
        return Ok(());
    }
    commit(
        node,
        Command::BeginImageCopy {
            name: image.to_string(),
            host: host.to_string(),
            term,
        },
    )
    .await?;
    tracing::info!(image, from = %src.from, host, term, bytes = src.size, "copying image");
    let outcome = stream(agents, term, &src).await;
    let ok = matches!(&outcome, Ok(sha256) if *sha256 == src.sha256);
    if !ok {
        // What arrived is not the image (a checksum that differs), or may be there in
        // part or whole (an upload whose answer was lost): never let a clone boot from
        // it, nor a later copy find the name taken. UploadImage deletes a failed upload
        // itself; this covers the rest.
        let del = agent::DeleteVolumeRequest {
            pool: src.pool.clone(),
            volume: src.volume.clone(),
            term,
        };
        let deleted = match agents.client(&src.to_addr) {
            Ok(mut c) => c.delete_volume(deadline(del, QUICK_CALL)).await.is_ok(),
            Err(_) => false,
        };
        if !deleted {
            tracing::warn!(image, host, "cannot delete what a failed image copy left; the next copy there will find its name taken");
        }
    }
    commit(
        node,
        Command::FinishImageCopy {
            name: image.to_string(),
            volume: src.volume.clone(),
            host: host.to_string(),
            ok,
        },
    )
    .await?;
    match outcome {
        Ok(_) if ok => {
            tracing::info!(image, host, term, "image copied");
            Ok(())
        }
        Ok(sha256) => Err(format!(
            "the copy of image {image} on {host} has checksum {sha256}, not {}",
            src.sha256
        )),
        Err(e) => Err(format!("copying image {image} to {host}: {e}")),
    }
}

/// Streams the volume from its host into the new host; the checksum of what arrived.
async fn stream(agents: &AgentPool, term: u64, src: &Source) -> Result<String, String> {
    let mut reader = agents
        .bulk_client(&src.from_addr)
        .map_err(|e| format!("host {}: {e}", src.from))?;
    let read = agent::ReadVolumeRequest {
        pool: src.pool.clone(),
        volume: src.volume.clone(),
        term,
    };
    let chunks = reader
        .read_volume(deadline(read, upload_deadline(src.size)))
        .await
        .map_err(|s| format!("reading from {}: {}", src.from, s.message()))?
        .into_inner()
        // A read that breaks ends the upload short, which the new host refuses.
        .take_while(|c| std::future::ready(c.is_ok()))
        .filter_map(|c| std::future::ready(c.ok()))
        .map(|c| agent::UploadImageChunk {
            part: Some(Part::Data(c.data)),
        });
    let header = agent::UploadImageChunk {
        part: Some(Part::Header(agent::UploadImageHeader {
            pool: src.pool.clone(),
            volume: src.volume.clone(),
            size_bytes: src.size,
            term,
        })),
    };
    let mut writer = agents
        .bulk_client(&src.to_addr)
        .map_err(|e| e.to_string())?;
    let mut call = tonic::Request::new(futures::stream::iter([header]).chain(chunks));
    call.set_timeout(upload_deadline(src.size));
    let uploaded = writer
        .upload_image(call)
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    Ok(uploaded.sha256)
}

async fn commit(node: &RaftNode, cmd: Command) -> Result<Reply, String> {
    match node.write_local(Request::anonymous(cmd)).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(refused)) => Err(format!("refused: {refused}")),
        Err(e) => Err(e.to_string()),
    }
}

//! The client's image calls (`ImageService`): the import streams a file in chunks.

use std::path::Path;
use std::time::Duration;

use drover_proto::v1 as pb;
use drover_proto::v1::image_service_client::ImageServiceClient;
use drover_proto::v1::import_image_chunk::Part;
use futures::StreamExt;
use tokio::io::AsyncReadExt;

use super::{with_request_id, Client, ClientError, Read};

/// Bytes per message of an import: well under gRPC's 4 MiB message limit.
const CHUNK_BYTES: usize = 1 << 20;

/// How long one import may take: the controller's own deadline for the host (a minute
/// plus a second per 10 MiB) and a minute more.
fn import_timeout(bytes: u64) -> Duration {
    Duration::from_secs(120 + bytes / (10 << 20))
}

/// The file's bytes as import messages after `header`, read as the stream is polled.
fn chunks(
    header: pb::ImportImageHeader,
    file: tokio::fs::File,
) -> impl futures::Stream<Item = pb::ImportImageChunk> + Send + 'static {
    let first = futures::stream::once(async move {
        pb::ImportImageChunk {
            part: Some(Part::Header(header)),
        }
    });
    let data = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; CHUNK_BYTES];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                let chunk = pb::ImportImageChunk {
                    part: Some(Part::Data(buf)),
                };
                Some((chunk, Some(file)))
            }
            // The stream ends short; the host refuses a file shorter than announced.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the image file");
                None
            }
        }
    });
    first.chain(data)
}

impl Client {
    /// Imports the file at `path` as image `name` into `pool`.
    pub async fn import_image(
        &self,
        name: &str,
        pool: &str,
        path: &Path,
    ) -> Result<pb::Image, ClientError> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| ClientError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?
            .len();
        self.call_within(import_timeout(size), |c| async move {
            // Opened afresh for every attempt: a retry (another controller) starts over.
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| tonic::Status::invalid_argument(format!("{}: {e}", path.display())))?;
            let header = pb::ImportImageHeader {
                name: name.to_string(),
                pool: pool.to_string(),
                size_bytes: size,
                url: String::new(),
            };
            ImageServiceClient::new(c)
                .import_image(chunks(header, file))
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// Has the cluster import the image at `url` (http://) as `name` into `pool`.
    pub async fn import_image_url(
        &self,
        name: &str,
        pool: &str,
        url: &str,
    ) -> Result<pb::Image, ClientError> {
        // The download's size is not known here: the longest a controller may take for
        // one (an hour), as the controller's own deadline for the host bounds it anyway.
        self.call_within(Duration::from_secs(3600), |c| async move {
            let header = pb::ImportImageHeader {
                name: name.to_string(),
                pool: pool.to_string(),
                size_bytes: 0,
                url: url.to_string(),
            };
            let only_header = futures::stream::iter([pb::ImportImageChunk {
                part: Some(Part::Header(header)),
            }]);
            ImageServiceClient::new(c)
                .import_image(only_header)
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    pub async fn image(&self, name: &str, stale: bool) -> Result<Read<pb::Image>, ClientError> {
        self.call(|c| async move {
            let resp = ImageServiceClient::new(c)
                .get_image(pb::GetImageRequest {
                    name: name.to_string(),
                    stale,
                })
                .await?;
            Ok(Read::from_response(resp))
        })
        .await
    }

    pub async fn images(&self, stale: bool) -> Result<Read<Vec<pb::Image>>, ClientError> {
        self.call(|c| async move {
            let resp = ImageServiceClient::new(c)
                .list_images(pb::ListImagesRequest { stale })
                .await?;
            Ok(Read::from_response(resp).map(|r| r.images))
        })
        .await
    }

    pub async fn delete_image(&self, name: &str) -> Result<pb::Image, ClientError> {
        let rid = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(
                pb::DeleteImageRequest {
                    name: name.to_string(),
                },
                &rid,
            );
            async move {
                ImageServiceClient::new(c)
                    .delete_image(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }
}

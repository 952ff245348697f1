//! Calling any gRPC method by its path, with an empty request message, whatever its types
//! and streaming shape: the access tests walk every RPC of a server this way. On the wire
//! unary and streaming calls are framed alike, so one bidirectional call with a single
//! (empty, i.e. all-defaults) message fits every method.

use bytes::{Buf as _, BufMut as _};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Messages as raw bytes, not decoded.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Calls `path` (`/package.Service/Method`) with an empty request and `metadata` (e.g.
/// `authorization`); `Ok` when the server answered a message or ended cleanly, else the
/// status it answered with.
pub async fn call_empty(
    channel: Channel,
    path: &str,
    metadata: &[(&'static str, String)],
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let path = PathAndQuery::try_from(path.to_string())
        .map_err(|e| Status::invalid_argument(format!("bad path {path:?}: {e}")))?;
    let mut request = Request::new(tokio_stream::iter([Vec::new()]));
    for (key, value) in metadata {
        let value = value
            .parse()
            .map_err(|_| Status::invalid_argument("bad metadata value"))?;
        request.metadata_mut().insert(*key, value);
    }
    let mut answers = grpc.streaming(request, path, RawCodec).await?.into_inner();
    answers.message().await.map(|_| ())
}

//! An image's bytes from an `http://` URL, for `image import --url`: one GET over
//! HTTP/1.1, answered 200 with a Content-Length (the host must know the size before the
//! first byte), its body as a stream of chunks. No TLS, no redirects: each is refused
//! naming what to do instead.

use std::time::Duration;

use futures::Stream;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::Status;

/// Connecting and getting the response's head; the body then streams as fast as the
/// upload to the host takes it, under the upload's own deadline.
const HEAD_WITHIN: Duration = Duration::from_secs(15);

/// The response to GET `url`: its size and its body.
pub struct Source {
    pub size: u64,
    body: Incoming,
}

impl Source {
    /// The body's bytes in order; an error ends the stream early, and the host then
    /// refuses a file shorter than announced.
    pub fn chunks(self) -> impl Stream<Item = Vec<u8>> + Send + 'static {
        futures::stream::unfold(Some(self.body), |body| async move {
            let mut body = body?;
            loop {
                match body.frame().await? {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => return Some((data.to_vec(), Some(body))),
                        // Trailers: nothing to store.
                        Err(_) => continue,
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "image download broke off");
                        return None;
                    }
                }
            }
        })
    }
}

fn bad(url: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("Cannot import from {url}: {why}"))
}

/// Sends GET `url`; `InvalidArgument` for a URL or answer that cannot be imported. (It
/// takes the URL by value: a borrowed one made the API handler's future fail rustc's
/// `Send` proof for `async_trait`'s boxing.)
pub async fn get(url: String) -> Result<Source, Status> {
    let url = url.as_str();
    let uri: Uri = url.parse().map_err(|e| bad(url, e))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad(
            url,
            "only http:// URLs are fetched (download https:// yourself and use --file)",
        ));
    }
    let host = uri.host().ok_or_else(|| bad(url, "no host"))?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let head = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| bad(url, e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| bad(url, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "image download connection ended");
            }
        });
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .header(hyper::header::USER_AGENT, "drover")
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .map_err(|e| bad(url, e))?;
        sender.send_request(req).await.map_err(|e| bad(url, e))
    };
    let resp = tokio::time::timeout(HEAD_WITHIN, head)
        .await
        .map_err(|_| bad(url, format!("no answer within {HEAD_WITHIN:?}")))??;
    let status = resp.status();
    if status != hyper::StatusCode::OK {
        return Err(bad(
            url,
            format!("the server answered {status} (redirects are not followed)"),
        ));
    }
    let size = resp
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| bad(url, "the answer has no Content-Length"))?;
    Ok(Source {
        size,
        body: resp.into_body(),
    })
}

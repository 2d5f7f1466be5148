//! `bulwark-passthrough`: the thinnest HTTP/1 proxy hyper allows, the benchmark's
//! measure of what one more hop costs on the machine, whatever runs in it.
//!
//! Each request goes to `--upstream` with its method, path, headers and body as they
//! came (over a pooled keep-alive connection), and the answer comes back as it is
//! read: no parsing, no routing, no translation, no journal, no metrics. The
//! difference between a call through it and a direct call is the floor any proxy
//! pays on this machine (the extra process wake-ups, the loopback round trip, the
//! HTTP framing); Bulwark's added latency minus this floor is Bulwark's own work
//! (bench/README.md, "The floor").

use std::convert::Infallible;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Upstream origin, `http://host:port`; the request's path and query are kept.
    #[arg(long)]
    upstream: String,
}

type Body = BoxBody<Bytes, hyper::Error>;

struct Proxy {
    client: Client<HttpConnector, Incoming>,
    /// `scheme://authority` of the upstream.
    origin: String,
}

impl Proxy {
    async fn forward(&self, req: Request<Incoming>) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = match format!("{}{path}", self.origin).parse() {
            Ok(uri) => uri,
            Err(err) => return failure(StatusCode::BAD_REQUEST, err.to_string()),
        };
        parts.uri = uri;
        // The client writes the upstream's own Host.
        parts.headers.remove(hyper::header::HOST);
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(response) => response.map(BodyExt::boxed),
            Err(err) => failure(StatusCode::BAD_GATEWAY, err.to_string()),
        }
    }
}

fn failure(status: StatusCode, message: String) -> Response<Body> {
    let body = Full::new(Bytes::from(message))
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let upstream: Uri = args.upstream.parse().context("--upstream is not a URL")?;
    let (Some(scheme), Some(authority)) = (upstream.scheme_str(), upstream.authority()) else {
        anyhow::bail!("--upstream must be an origin such as http://127.0.0.1:8080");
    };
    anyhow::ensure!(scheme == "http", "--upstream must be plain http");
    let proxy = Arc::new(Proxy {
        client: Client::builder(TokioExecutor::new()).build_http(),
        origin: format!("{scheme}://{authority}"),
    });
    // One thread, as Bulwark runs when pinned to one core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        loop {
            let (socket, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, say: wait rather than spin.
                    eprintln!("bulwark-passthrough: accept: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            // As Bulwark's listener does: small writes leave at once.
            if let Err(err) = socket.set_nodelay(true) {
                eprintln!("bulwark-passthrough: TCP_NODELAY: {err}");
            }
            let proxy = Arc::clone(&proxy);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let proxy = Arc::clone(&proxy);
                    async move { Ok::<_, Infallible>(proxy.forward(req).await) }
                });
                // A connection that fails ends alone; the load generator counts it.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    })
}

//! A deliberately small HTTP/1.1 endpoint: `GET /metrics`, `/healthz` and `/readyz`.
//! Three fixed routes do not justify a web framework in a sidecar meant to stay small.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{Health, Metrics};

/// Binds `listen` and serves until `shutdown`.
pub async fn bind(listen: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen).await
}

pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "Telemetry endpoint failed to accept a connection");
                    continue;
                }
            },
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &metrics, &health).await {
                tracing::debug!(%error, "Telemetry request failed");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics, health: &Health) -> std::io::Result<()> {
    // A request line and a few headers fit easily; anything longer is not for us.
    let mut buffer = vec![0u8; 2048];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))??;
    let request = String::from_utf8_lossy(&buffer[..read]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, content_type, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
        "/readyz" => {
            let (ready, text) = health.report();
            (if ready { "200 OK" } else { "503 Service Unavailable" }, "text/plain", text)
        }
        _ => ("404 Not Found", "text/plain", "try /metrics, /healthz or /readyz\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

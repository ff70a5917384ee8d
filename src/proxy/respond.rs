//! Responses the proxy writes itself: the status page, fixed responses, refusals.

use bytes::Bytes;
use pingora_http::ResponseHeader;

use super::downstream::Downstream;

/// Write a complete response with `body`. HEAD requests get the headers only.
pub async fn write(
    session: &mut impl Downstream,
    status: u16,
    content_type: &str,
    body: Bytes,
) -> pingora_error::Result<()> {
    write_with(session, status, content_type, body, None).await
}

/// Like [`write`], with an optional `Retry-After` (seconds).
pub async fn write_with(
    session: &mut impl Downstream,
    status: u16,
    content_type: &str,
    body: Bytes,
    retry_after: Option<u64>,
) -> pingora_error::Result<()> {
    let mut header = ResponseHeader::build(status, Some(5))?;
    header.insert_header("content-type", content_type)?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    if let Some(secs) = retry_after {
        header.insert_header("retry-after", secs.to_string())?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(body, true).await?;
    }
    Ok(())
}

/// Write a short plain-text answer.
pub async fn text(
    session: &mut impl Downstream,
    status: u16,
    message: &str,
) -> pingora_error::Result<()> {
    text_with(session, status, message, None).await
}

/// Like [`text`], with an optional `Retry-After` (seconds).
pub async fn text_with(
    session: &mut impl Downstream,
    status: u16,
    message: &str,
    retry_after: Option<u64>,
) -> pingora_error::Result<()> {
    let body = Bytes::from(format!("{message}\n"));
    write_with(
        session,
        status,
        "text/plain; charset=utf-8",
        body,
        retry_after,
    )
    .await
}

/// Answer a gRPC call with `grpc_status` and `message` (HTTP 200, trailers-only).
pub async fn grpc_error(
    session: &mut impl Downstream,
    grpc_status: u32,
    message: &str,
) -> pingora_error::Result<()> {
    let mut header = ResponseHeader::build(200, Some(4))?;
    header.insert_header("content-type", "application/grpc")?;
    header.insert_header("grpc-status", grpc_status.to_string())?;
    header.insert_header("grpc-message", super::grpc::encode_message(message))?;
    session.write_response_header(Box::new(header), true).await
}

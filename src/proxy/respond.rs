//! Responses the proxy writes itself: the status page, fixed responses, errors.

use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Write a complete response with `body`. HEAD requests get the headers only.
pub async fn write(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
) -> pingora_error::Result<()> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("content-type", content_type)?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Write a short plain-text error.
pub async fn text(session: &mut Session, status: u16, message: &str) -> pingora_error::Result<()> {
    let body = Bytes::from(format!("{message}\n"));
    write(session, status, "text/plain; charset=utf-8", body).await
}

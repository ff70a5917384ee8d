//! From Pingora errors to what the client is told and what the backend is blamed for.

use pingora_error::{Error, ErrorSource, ErrorType};

use crate::metrics::ErrorKind;

/// The status a failed request is answered with (0: the client is gone, nothing to send).
pub fn status_for(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                ErrorType::ReadTimedout => 408,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// The short text sent with a locally generated error status.
pub fn message_for(status: u16) -> &'static str {
    match status {
        503 => "no backend available",
        504 => "upstream timed out",
        502 => "upstream failed",
        400 => "bad request",
        408 => "request timeout: the request arrived too slowly",
        413 => "request body too large",
        _ => "error",
    }
}

/// What an upstream error says about the backend.
pub fn upstream_error_kind(e: &Error) -> ErrorKind {
    match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout | ErrorType::ConnectTimedout => {
            ErrorKind::Timeout
        }
        t if is_tls(t) => ErrorKind::Tls,
        _ => ErrorKind::ConnectionError,
    }
}

/// What a failure to connect says about the backend: TLS or plain connection trouble.
pub fn connect_error_kind(e: &Error) -> ErrorKind {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout => ErrorKind::Timeout,
        t if is_tls(t) => ErrorKind::Tls,
        _ => ErrorKind::ConnectFailure,
    }
}

/// Why an active health check failed.
pub fn health_check_error_kind(e: &Error) -> ErrorKind {
    match e.etype() {
        ErrorType::Custom(_) | ErrorType::CustomCode(..) => ErrorKind::BadAnswer,
        ErrorType::ConnectRefused | ErrorType::ConnectNoRoute | ErrorType::ConnectError => {
            ErrorKind::ConnectFailure
        }
        _ => upstream_error_kind(e),
    }
}

fn is_tls(t: &ErrorType) -> bool {
    matches!(
        t,
        ErrorType::TLSHandshakeFailure
            | ErrorType::InvalidCert
            | ErrorType::HandshakeError
            | ErrorType::TLSWantX509Lookup
    )
}

/// Whether `e` only says the client went away (normal: not worth an error log).
pub fn is_client_gone(e: &Error) -> bool {
    e.esource() == &ErrorSource::Downstream
        && matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(etype: ErrorType, source: ErrorSource) -> Box<Error> {
        let mut e = Error::new(etype);
        e.esource = source;
        e
    }

    #[test]
    fn statuses_follow_the_error() {
        assert_eq!(
            status_for(&err(ErrorType::ReadTimedout, ErrorSource::Upstream)),
            504
        );
        assert_eq!(
            status_for(&err(ErrorType::ConnectRefused, ErrorSource::Upstream)),
            502
        );
        assert_eq!(
            status_for(&err(ErrorType::ReadTimedout, ErrorSource::Downstream)),
            408
        );
        assert_eq!(
            status_for(&err(ErrorType::ConnectionClosed, ErrorSource::Downstream)),
            0
        );
        assert_eq!(
            status_for(&err(ErrorType::HTTPStatus(413), ErrorSource::Internal)),
            413
        );
        assert!(is_client_gone(&err(
            ErrorType::ConnectionClosed,
            ErrorSource::Downstream
        )));
        assert!(!is_client_gone(&err(
            ErrorType::ConnectionClosed,
            ErrorSource::Upstream
        )));
    }
}

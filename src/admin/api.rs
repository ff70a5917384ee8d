//! The runtime API on the admin listener: reload the file, drain and weigh backends, add and
//! remove them. JSON in and out.
//!
//! Every change needs the bearer token of `admin.token_file` (401 without it or with another
//! one; 403 when no token file is configured). Bodies are at most [`MAX_BODY_BYTES`] and parsed
//! strictly (unknown fields are errors); an unknown group or backend is a 404 with a message;
//! a change is applied whole or not at all, one at a time, and logged with who made it.
//!
//! | method | path | body |
//! |---|---|---|
//! | POST | `/reload` | — |
//! | POST | `/api/groups/{group}/backends/{address}/drain` | — |
//! | POST | `/api/groups/{group}/backends/{address}/undrain` | — |
//! | PUT | `/api/groups/{group}/backends/{address}/weight` | `{"weight": N}` |
//! | POST | `/api/groups/{group}/backends` | `{"address": "ip:port", "weight": N}` |
//! | DELETE | `/api/groups/{group}/backends/{address}` | — |

use std::net::SocketAddr;

use http::{Method, StatusCode};
use pingora_core::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth;
use crate::reload::{ReloadError, Reloader};
use crate::target_group::ChangeError;

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A change the API can make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Reload,
    Drain { group: String, backend: SocketAddr },
    Undrain { group: String, backend: SocketAddr },
    Weight { group: String, backend: SocketAddr },
    Add { group: String },
    Remove { group: String, backend: SocketAddr },
}

/// An API answer: status and JSON body.
pub type Answer = (StatusCode, Value);

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    (status, json!({ "error": message.into() }))
}

/// The change `method` + `path` asks for; `None` when the path is not an API path; an error
/// answer when it is one but malformed.
pub fn parse(method: &Method, path: &str) -> Option<Result<Change, Answer>> {
    if path == "/reload" {
        return Some(match *method {
            Method::POST => Ok(Change::Reload),
            _ => Err(error(StatusCode::METHOD_NOT_ALLOWED, "use POST /reload")),
        });
    }
    let rest = path.strip_prefix("/api/groups/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let group = || percent_decode(parts[0]);
    let backend = |s: &str| {
        percent_decode(s).parse::<SocketAddr>().map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                format!("`{s}` is not an ip:port backend address"),
            )
        })
    };
    let change = match (method.clone(), parts.as_slice()) {
        (Method::POST, [_, "backends"]) => Ok(Change::Add { group: group() }),
        (Method::DELETE, [_, "backends", b]) => backend(b).map(|backend| Change::Remove {
            group: group(),
            backend,
        }),
        (Method::POST, [_, "backends", b, "drain"]) => backend(b).map(|backend| Change::Drain {
            group: group(),
            backend,
        }),
        (Method::POST, [_, "backends", b, "undrain"]) => {
            backend(b).map(|backend| Change::Undrain {
                group: group(),
                backend,
            })
        }
        (Method::PUT, [_, "backends", b, "weight"]) => backend(b).map(|backend| Change::Weight {
            group: group(),
            backend,
        }),
        _ => Err(error(
            StatusCode::NOT_FOUND,
            "unknown API call: see the runtime API in the README",
        )),
    };
    Some(change)
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    address: String,
    #[serde(default = "one")]
    weight: usize,
}

fn one() -> usize {
    1
}

/// Serve one API call: authenticate, read and parse the body, apply.
pub async fn serve(reloader: &Reloader, session: &mut ServerSession, change: Change) -> Answer {
    let token = reloader.token();
    let Some(token) = token.as_ref() else {
        return error(
            StatusCode::FORBIDDEN,
            "the runtime API accepts no change: no admin.token_file is configured",
        );
    };
    let header = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !auth::authorized(header, token) {
        return error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    }
    let body = match read_body(session).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let who = session
        .client_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "an unknown client".to_string());
    let who = format!("admin API client {who}");
    if change == Change::Reload {
        if !body.is_empty() {
            return error(StatusCode::BAD_REQUEST, "POST /reload takes no body");
        }
        return match reloader.reload(&who).await {
            Ok(report) => (StatusCode::OK, json!({"reloaded": report})),
            Err(ReloadError::Invalid(e)) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": "the configuration is invalid; nothing changed", "errors": e.iter().map(|x| x.to_string()).collect::<Vec<_>>()}),
            ),
            Err(ReloadError::Failed(m)) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("reload failed, nothing changed: {m}"),
            ),
        };
    }
    let _one_at_a_time = reloader.exclusive().await;
    apply(reloader, change, &body, &who)
}

/// Apply a backend change.
fn apply(reloader: &Reloader, change: Change, body: &[u8], who: &str) -> Answer {
    let snapshot = reloader.runtime.snapshot();
    let group_name = match &change {
        Change::Drain { group, .. }
        | Change::Undrain { group, .. }
        | Change::Weight { group, .. }
        | Change::Add { group }
        | Change::Remove { group, .. } => group.clone(),
        Change::Reload => unreachable!("handled by the caller"),
    };
    let Some(group) = snapshot.group(&group_name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no target group named `{group_name}`"),
        );
    };
    let needs_body = matches!(change, Change::Weight { .. } | Change::Add { .. });
    if !needs_body && !body.is_empty() {
        return error(StatusCode::BAD_REQUEST, "this call takes no body");
    }
    let result = match change {
        Change::Drain { backend, .. } | Change::Undrain { backend, .. } => {
            let drain = matches!(change, Change::Drain { .. });
            group.set_drained(backend, drain).map(|changed| {
                let verb = if drain { "drained" } else { "undrained" };
                log::info!("{who} {verb} backend {backend} of group {group_name}");
                json!({"backend": backend.to_string(), "target_group": group_name, "drained": drain, "changed": changed})
            })
        }
        Change::Weight { backend, .. } => {
            let weight = match parse_body::<WeightBody>(body).and_then(|b| valid_weight(b.weight)) {
                Ok(w) => w,
                Err(a) => return a,
            };
            group.set_weight(backend, weight).map(|()| {
                log::info!("{who} set the weight of backend {backend} of group {group_name} to {weight}");
                json!({"backend": backend.to_string(), "target_group": group_name, "weight": weight})
            })
        }
        Change::Add { .. } => {
            let add = match parse_body::<AddBody>(body) {
                Ok(a) => a,
                Err(a) => return a,
            };
            let Ok(backend) = add.address.parse::<SocketAddr>() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("`{}` is not an ip:port backend address", add.address),
                );
            };
            let weight = match valid_weight(add.weight) {
                Ok(w) => w,
                Err(a) => return a,
            };
            group.add_backend(backend, weight).map(|()| {
                log::info!("{who} added backend {backend} (weight {weight}) to group {group_name}: it waits for its health checks");
                json!({"backend": backend.to_string(), "target_group": group_name, "weight": weight, "state": "initial"})
            })
        }
        Change::Remove { backend, .. } => group.remove_backend(backend).map(|()| {
            log::info!("{who} removed backend {backend} from group {group_name}: it drains first");
            json!({"backend": backend.to_string(), "target_group": group_name, "state": "draining"})
        }),
        Change::Reload => unreachable!("handled by the caller"),
    };
    match result {
        Ok(v) => (StatusCode::OK, v),
        Err(e @ ChangeError::UnknownBackend(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ ChangeError::AlreadyMember(_)) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

fn valid_weight(weight: usize) -> Result<usize, Answer> {
    if (1..=1000).contains(&weight) {
        Ok(weight)
    } else {
        Err(error(
            StatusCode::BAD_REQUEST,
            format!("weight must be within 1..=1000, got {weight}"),
        ))
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Answer> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")))
}

/// The whole request body, refused past [`MAX_BODY_BYTES`].
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Answer> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("bodies are at most {MAX_BODY_BYTES} bytes"),
        ));
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("bodies are at most {MAX_BODY_BYTES} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body failed: {e}"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:8001".parse().unwrap()
    }

    #[test]
    fn paths_map_to_changes() {
        assert_eq!(parse(&Method::POST, "/reload"), Some(Ok(Change::Reload)));
        assert_eq!(
            parse(&Method::POST, "/api/groups/g/backends/127.0.0.1:8001/drain"),
            Some(Ok(Change::Drain {
                group: "g".into(),
                backend: addr()
            }))
        );
        assert_eq!(
            parse(
                &Method::PUT,
                "/api/groups/g/backends/127.0.0.1%3A8001/weight"
            ),
            Some(Ok(Change::Weight {
                group: "g".into(),
                backend: addr()
            }))
        );
        assert_eq!(
            parse(&Method::POST, "/api/groups/g/backends"),
            Some(Ok(Change::Add { group: "g".into() }))
        );
        assert_eq!(
            parse(&Method::DELETE, "/api/groups/g/backends/[::1]:80"),
            Some(Ok(Change::Remove {
                group: "g".into(),
                backend: "[::1]:80".parse().unwrap()
            }))
        );
        assert_eq!(parse(&Method::GET, "/status"), None);
        assert!(matches!(
            parse(&Method::GET, "/reload"),
            Some(Err((StatusCode::METHOD_NOT_ALLOWED, _)))
        ));
        assert!(matches!(
            parse(&Method::POST, "/api/groups/g/backends/nope/drain"),
            Some(Err((StatusCode::BAD_REQUEST, _)))
        ));
        assert!(matches!(
            parse(&Method::POST, "/api/groups/g/other"),
            Some(Err((StatusCode::NOT_FOUND, _)))
        ));
    }

    #[test]
    fn bodies_are_parsed_strictly() {
        assert!(parse_body::<WeightBody>(br#"{"weight": 3}"#).is_ok());
        assert!(parse_body::<WeightBody>(br#"{"weight": 3, "extra": 1}"#).is_err());
        assert!(parse_body::<WeightBody>(br#"{"weight": "3"}"#).is_err());
        assert!(parse_body::<AddBody>(br#"{"address": "127.0.0.1:1"}"#).is_ok());
        assert!(valid_weight(0).is_err() && valid_weight(1001).is_err());
    }
}

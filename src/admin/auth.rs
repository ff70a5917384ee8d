//! Who may change a running balancer: a bearer token read from `admin.token_file`, compared
//! in constant time. Without a token file, the runtime API accepts no change at all.

use std::path::Path;

use subtle::ConstantTimeEq;

/// Shortest token accepted: guessing it must be hopeless.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Read the token from `path` (surrounding white space removed).
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = text.trim().to_string();
    if token.len() < MIN_TOKEN_BYTES || token.contains(char::is_whitespace) {
        return Err(format!(
            "the token in {} must be one word of at least {MIN_TOKEN_BYTES} characters",
            path.display()
        ));
    }
    Ok(token)
}

/// Whether the `Authorization` header value carries `token` as a bearer token.
pub fn authorized(header: Option<&[u8]>, token: &str) -> bool {
    let Some(value) = header else {
        return false;
    };
    let Some(given) = value
        .strip_prefix(b"Bearer ")
        .or_else(|| value.strip_prefix(b"bearer "))
    else {
        return false;
    };
    // Lengths may differ; `ct_eq` on slices of unequal length is false without a shortcut
    // on the content.
    given.trim_ascii().ct_eq(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let t = "s3cr3t-token-0123456789";
        assert!(authorized(Some(format!("Bearer {t}").as_bytes()), t));
        assert!(!authorized(Some(b"Bearer s3cr3t-token-012345678"), t));
        assert!(!authorized(Some(format!("Basic {t}").as_bytes()), t));
        assert!(!authorized(Some(t.as_bytes()), t));
        assert!(!authorized(None, t));
    }

    #[test]
    fn short_or_split_tokens_are_refused() {
        let dir = std::env::temp_dir().join(format!("sy-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "abc\n").unwrap();
        assert!(read_token(&short).is_err());
        let good = dir.join("good");
        std::fs::write(&good, "  0123456789abcdef0123\n").unwrap();
        assert_eq!(read_token(&good).unwrap(), "0123456789abcdef0123");
        let _ = std::fs::remove_dir_all(dir);
    }
}

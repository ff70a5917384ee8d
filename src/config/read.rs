//! YAML text → [`FileConfig`] (Switchyard's sections) and Pingora's `ServerConf`.
//!
//! The file is parsed once into a YAML value; then every section, and every item of the
//! lists, is deserialized on its own, so that one bad item does not hide the errors of the
//! others. Every error is located with the [`LineIndex`].

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::error::ConfigError;
use super::file::{FileConfig, PINGORA_KEYS, SWITCHYARD_KEYS};
use super::lines::LineIndex;
use pingora_core::server::configuration::ServerConf;

/// What was read, and what could not be.
pub struct Read {
    pub file: FileConfig,
    pub pingora: Option<ServerConf>,
    pub errors: Vec<ConfigError>,
}

/// Reads sections of one parsed document, collecting errors.
struct Reader<'a> {
    source: &'a str,
    lines: &'a LineIndex,
    errors: Vec<ConfigError>,
}

/// Parse `text` (already known to be non-empty YAML text) from `source`.
pub fn read(text: &str, source: &str, lines: &LineIndex) -> Result<Read, ConfigError> {
    let mut value: Value = serde_yaml::from_str(text).map_err(|e| ConfigError {
        source: source.to_string(),
        field: "(file)".to_string(),
        line: e.location().map(|l| l.line()),
        message: super::clean_yaml_message(&e.to_string(), ""),
    })?;
    value.apply_merge().map_err(|e| ConfigError {
        source: source.to_string(),
        field: "(file)".to_string(),
        line: None,
        message: format!("bad YAML merge key: {e}"),
    })?;
    let Value::Mapping(top) = value else {
        return Err(ConfigError {
            source: source.to_string(),
            field: "(top level)".to_string(),
            line: Some(1),
            message: "the configuration must be a YAML mapping of keys (listeners, target_groups, routes, …)".to_string(),
        });
    };
    let mut r = Reader {
        source,
        lines,
        errors: Vec::new(),
    };
    r.check_top_level_keys(&top);
    let pingora = r.pingora(&top);
    let file = r.file_config(&top);
    Ok(Read {
        file,
        pingora,
        errors: r.errors,
    })
}

impl Reader<'_> {
    fn error(&mut self, field: &str, message: String) {
        self.errors.push(ConfigError {
            source: self.source.to_string(),
            field: field.to_string(),
            line: self.lines.find(field),
            message,
        });
    }

    fn check_top_level_keys(&mut self, top: &Mapping) {
        for key in top.keys() {
            let name = match key {
                Value::String(s) => s.as_str(),
                _ => {
                    self.error("(top level)", format!("keys must be names, got {key:?}"));
                    continue;
                }
            };
            if !PINGORA_KEYS.contains(&name) && !SWITCHYARD_KEYS.contains(&name) {
                self.error(
                    name,
                    format!(
                        "unknown key `{name}` (Switchyard keys: {}; or a Pingora server key such as threads, pid_file, grace_period_seconds)",
                        SWITCHYARD_KEYS.join(", ")
                    ),
                );
            }
        }
    }

    /// Pingora's own keys, with the same error reporting as ours.
    fn pingora(&mut self, top: &Mapping) -> Option<ServerConf> {
        let mine: Mapping = top
            .iter()
            .filter(|(k, _)| k.as_str().is_some_and(|k| PINGORA_KEYS.contains(&k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut conf: ServerConf = self.deserialize(Value::Mapping(mine), "")?;
        // One sweeper per connector watches the idle upstream connections, not one task each.
        conf.upstream_keepalive_idle_sweep = true;
        match conf.validate() {
            Ok(conf) => Some(conf),
            Err(e) => {
                let explanation = e.context.as_ref().map(|c| c.as_str().to_string());
                match explanation.as_deref().and_then(split_pingora_key) {
                    Some((key, rest)) => self.error(key, rest.to_string()),
                    None => self.error("(pingora server settings)", e.to_string()),
                }
                None
            }
        }
    }

    fn file_config(&mut self, top: &Mapping) -> FileConfig {
        let get = |k: &str| top.get(k).filter(|v| !v.is_null());
        let listeners = self.items(get("listeners"), "listeners");
        let listeners_given = listeners.len();
        let group_values = get("target_groups");
        let target_groups = self.items(group_values, "target_groups");
        let unreadable_groups = unreadable_names(group_values, &target_groups);
        FileConfig {
            listeners,
            listeners_given,
            target_groups,
            unreadable_groups,
            routes: self.items(get("routes"), "routes"),
            default_target_group: get("default_target_group")
                .and_then(|v| self.deserialize(v.clone(), "default_target_group")),
            proxy: get("proxy")
                .and_then(|v| self.deserialize(v.clone(), "proxy"))
                .unwrap_or_default(),
            admin: get("admin")
                .and_then(|v| self.deserialize(v.clone(), "admin"))
                .unwrap_or_default(),
        }
    }

    /// Each readable item of the list at `path`, with its index.
    fn items<T: DeserializeOwned>(&mut self, value: Option<&Value>, path: &str) -> Vec<(usize, T)> {
        match value {
            None => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    self.deserialize(v.clone(), &format!("{path}[{i}]"))
                        .map(|t| (i, t))
                })
                .collect(),
            Some(other) => {
                self.error(path, format!("must be a list, got {}", kind(other)));
                Vec::new()
            }
        }
    }

    /// Deserialize `value` found at `path`, recording an error located at the exact field.
    fn deserialize<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let field = join_path(path, &e.path().to_string());
                let message = super::clean_yaml_message(&e.inner().to_string(), &field);
                self.error(&field, message);
                None
            }
        }
    }
}

/// Pingora's `ServerConf::validate` explains an error starting with the key at fault
/// (`max_blocking_threads must be greater than zero`): that key and the rest, so the error can
/// name the key's line.
fn split_pingora_key(explanation: &str) -> Option<(&'static str, &str)> {
    let (key, rest) = explanation.split_once(' ')?;
    let key = PINGORA_KEYS.iter().find(|k| **k == key)?;
    Some((key, rest))
}

/// Names of list items that failed to deserialize but carry a readable `name`.
fn unreadable_names<T>(value: Option<&Value>, read: &[(usize, T)]) -> Vec<String> {
    let Some(Value::Sequence(items)) = value else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter(|(i, _)| !read.iter().any(|(j, _)| j == i))
        .filter_map(|(_, v)| v.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

fn join_path(prefix: &str, inner: &str) -> String {
    match (prefix, inner) {
        (p, ".") | (p, "") => p.to_string(),
        ("", i) => i.to_string(),
        (p, i) if i.starts_with('[') => format!("{p}{i}"),
        (p, i) => format!("{p}.{i}"),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_like_serde_path_to_error() {
        assert_eq!(join_path("routes[1]", "."), "routes[1]");
        assert_eq!(
            join_path("routes[1]", "rate_limit.rate"),
            "routes[1].rate_limit.rate"
        );
        assert_eq!(join_path("listeners", "[0]"), "listeners[0]");
        assert_eq!(join_path("", "threads"), "threads");
    }
}

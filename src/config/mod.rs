//! Configuration: the YAML surface ([`file`]), one validation pass ([`validate`]) and the
//! checked model ([`model`]) the rest of the program uses.

pub mod error;
pub mod file;
pub mod model;
pub mod validate;

pub use error::ConfigError;
pub use model::*;

use std::path::Path;

/// The configuration of the built-in demo (`switchyard --demo`).
pub const DEMO_YAML: &str = include_str!("../../conf/demo.yaml");

/// Read and validate the configuration file at `path`.
pub fn load(path: &Path) -> Result<(Config, String), ConfigError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        source: source.clone(),
        field: "(file)".to_string(),
        line: None,
        message: format!("cannot read the configuration file: {e}"),
    })?;
    let config = parse(&text, &source)?;
    Ok((config, text))
}

/// Parse and validate configuration `text`; `source` names it in errors.
pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
    if text.trim().is_empty()
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(ConfigError {
            source: source.to_string(),
            field: "(file)".to_string(),
            line: None,
            message: "the configuration is empty".to_string(),
        });
    }
    let de = serde_yaml::Deserializer::from_str(text);
    let file: file::FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.location().map(|l| l.line());
        let mut message = clean_yaml_message(&inner.to_string(), &path);
        let top_level_unknown = message.starts_with("unknown field") && !path.contains(['.', '[']);
        let field = if top_level_unknown || path == "." || path.is_empty() {
            // serde lists ~40 expected keys at the top level; say it shorter.
            if let Some(pos) = message.find(", expected one of") {
                message.truncate(pos);
                message.push_str(" (Switchyard keys: listeners, target_groups, routes, default_target_group, proxy, admin; or a Pingora server key)");
            }
            "(top level)".to_string()
        } else {
            path
        };
        ConfigError { source: source.to_string(), field, line, message }
    })?;
    validate::validate(file, text, source)
}

/// serde_yaml's message without the location suffix (reported separately) and without a
/// repeated field-path prefix.
pub(crate) fn clean_yaml_message(message: &str, path: &str) -> String {
    let mut m = message.to_string();
    if let Some(pos) = m.find(" at line ") {
        m.truncate(pos);
    }
    match m.strip_prefix(&format!("{path}: ")) {
        Some(rest) => rest.to_string(),
        None => m,
    }
}

//! Configuration: the YAML surface ([`file`]), read section by section ([`read`]), one
//! validation pass ([`validate`]) and the checked model ([`model`]) the rest of the program
//! uses. Every error names the field and the line of the offending item ([`lines`]), and all
//! independent errors of a file are reported together.

pub mod error;
pub mod file;
pub mod lines;
pub mod model;
pub mod policy;
pub mod policy_file;
mod read;
pub mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;

use std::path::Path;

use pingora_core::server::configuration::ServerConf;

/// The configuration of the built-in demo (`switchyard --demo`).
pub const DEMO_YAML: &str = include_str!("../../conf/demo.yaml");

/// A configuration file that passed every check.
#[derive(Debug)]
pub struct Loaded {
    /// Switchyard's settings.
    pub config: Config,
    /// Pingora's server settings from the same file.
    pub pingora: ServerConf,
    /// Accepted, but worth saying (printed by `-t`, logged at start and reload).
    pub warnings: Vec<ConfigError>,
    /// Where it came from: a path or `<embedded demo configuration>`.
    pub source: String,
}

/// Read and check the configuration file at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        source: source.clone(),
        field: "(file)".to_string(),
        line: None,
        message: format!("cannot read the configuration file: {e}"),
    })?;
    parse_full(&text, &source)
}

/// Parse and check configuration `text`; `source` names it in errors.
pub fn parse_full(text: &str, source: &str) -> Result<Loaded, ConfigErrors> {
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(ConfigError {
            source: source.to_string(),
            field: "(file)".to_string(),
            line: None,
            message: "the configuration is empty".to_string(),
        }
        .into());
    }
    let lines = lines::LineIndex::build(text);
    let read = read::read(text, source, &lines)?;
    let mut checker = validate::Checker::new(source, &lines);
    checker.errors = read.errors;
    let config = validate::validate(read.file, &mut checker);
    match (config, read.pingora) {
        (Some(config), Some(pingora)) if checker.errors.is_empty() => Ok(Loaded {
            config,
            pingora,
            warnings: checker.warnings,
            source: source.to_string(),
        }),
        _ => Err(ConfigErrors(checker.errors).sorted()),
    }
}

/// Parse and check configuration `text`: Switchyard's part only.
pub fn parse(text: &str, source: &str) -> Result<Config, ConfigErrors> {
    parse_full(text, source).map(|l| l.config)
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

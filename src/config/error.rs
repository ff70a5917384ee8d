//! Configuration errors that name the field and, where known, the line.

use std::fmt;

/// A configuration problem. Displayed as `FILE:LINE: FIELD: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the configuration came from (a path or `<embedded demo configuration>`).
    pub source: String,
    /// The field path, e.g. `target_groups[0].strategy`.
    pub field: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every independent problem found in one configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// One error.
    pub fn one(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }

    /// The errors, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }

    /// How many errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a returned error; here for completeness.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sort by line (errors without a line last) keeping discovery order among equals.
    pub fn sorted(mut self) -> Self {
        self.0.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        self
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line; with several, a last line counts them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        if self.0.len() > 1 {
            write!(f, "\n{} errors", self.0.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors::one(e)
    }
}

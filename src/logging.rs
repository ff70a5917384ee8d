//! Logging: `env_logger` (`RUST_LOG`, default `info`), with the few ERROR lines that Pingora
//! writes during normal operation shown at the level they deserve. Normal operation logs
//! nothing at ERROR:
//!
//! - a client closing its connection while its request head is read (Pingora: "Fail to
//!   proxy: Downstream …") is routine: debug;
//! - the new process of a graceful upgrade polling the upgrade socket once before the old
//!   process connects ("No incoming socket transfer, sleep 1s and try again"): info.

use log::{Level, Log, Metadata, Record};

/// Install the logger; call once at start.
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Leveled { inner })).is_ok() {
        log::set_max_level(max);
    }
}

struct Leveled {
    inner: env_logger::Logger,
}

/// The level a Pingora ERROR record really deserves, if lower.
fn demoted(record: &Record) -> Option<Level> {
    if record.level() != Level::Error {
        return None;
    }
    let target = record.target();
    if !target.starts_with("pingora") {
        return None;
    }
    let text = record.args().to_string();
    if text.starts_with("Fail to proxy: Downstream") {
        return Some(Level::Debug);
    }
    if text.starts_with("No incoming socket transfer") {
        return Some(Level::Info);
    }
    None
}

impl Log for Leveled {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        match demoted(record) {
            None => self.inner.log(record),
            Some(level) => {
                let lower = Record::builder()
                    .args(*record.args())
                    .level(level)
                    .target(record.target())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build();
                if self.inner.enabled(lower.metadata()) {
                    self.inner.log(&lower);
                }
            }
        }
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level_of(target: &str, level: Level, text: std::fmt::Arguments) -> Option<Level> {
        demoted(
            &Record::builder()
                .target(target)
                .level(level)
                .args(text)
                .build(),
        )
    }

    #[test]
    fn routine_pingora_errors_are_demoted_and_real_ones_kept() {
        assert_eq!(
            level_of(
                "pingora_proxy",
                Level::Error,
                format_args!("Fail to proxy: Downstream ConnectionClosed")
            ),
            Some(Level::Debug)
        );
        assert_eq!(
            level_of(
                "pingora_core::server::transfer_fd",
                Level::Error,
                format_args!("No incoming socket transfer, sleep 1s and try again")
            ),
            Some(Level::Info)
        );
        assert_eq!(
            level_of(
                "pingora_proxy",
                Level::Error,
                format_args!("Fail to proxy: Upstream ConnectRefused")
            ),
            None
        );
        assert_eq!(
            level_of(
                "switchyard",
                Level::Error,
                format_args!("Fail to proxy: Downstream x")
            ),
            None
        );
    }
}

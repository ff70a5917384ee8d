//! Where each field of the YAML file is: a map from field path (`target_groups[1].health_check.
//! timeout`, the same spelling `serde_path_to_error` uses) to the 1-based line of its key (or of
//! the sequence item).
//!
//! Errors then point at the offending item itself, not at the first line that happens to
//! contain the same word. A field that is absent from the file (a default that conflicts with
//! another setting) is located at its nearest ancestor that is present.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Field path → line.
#[derive(Debug, Default, Clone)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Index `text`. A file the YAML parser cannot read yields what was indexed before the
    /// error (the syntax error itself is reported by the deserializer, with its line).
    pub fn build(text: &str) -> Self {
        let mut walker = Walker::default();
        let _ = Parser::new_from_str(text).load(&mut walker, false);
        LineIndex {
            lines: walker.lines,
        }
    }

    /// The line of `path`, or of its nearest ancestor present in the file; the document's
    /// first line for top-level fields that are absent.
    pub fn find(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(line) = self.lines.get(p) {
                return Some(*line);
            }
            match parent(p) {
                Some(up) => p = up,
                None => return self.lines.get("").copied(),
            }
        }
    }

    /// The line of `path` only if it is present in the file.
    pub fn exact(&self, path: &str) -> Option<usize> {
        self.lines.get(path).copied()
    }
}

/// `a.b[2].c` → `a.b[2]` → `a.b` → `a` → `` → none.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

/// One open collection while walking the events.
#[derive(Debug)]
enum Frame {
    Map {
        path: String,
        /// The key whose value comes next, or `None` when a key comes next.
        key: Option<String>,
    },
    Seq {
        path: String,
        index: usize,
    },
}

#[derive(Debug, Default)]
struct Walker {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
    /// Depth of a complex (non-scalar) mapping key being skipped.
    skipping: usize,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Walker {
    /// The path a new node takes at this point, if it is a value (not a key).
    fn node_path(&mut self, mark: Marker) -> Option<String> {
        match self.stack.last_mut() {
            None => {
                self.lines.entry(String::new()).or_insert(mark.line());
                Some(String::new())
            }
            Some(Frame::Map { path, key }) => key.as_ref().map(|k| join(path, k)),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                self.lines.insert(p.clone(), mark.line());
                Some(p)
            }
        }
    }

    /// A value (scalar or collection) of the top frame is complete.
    fn complete(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }

    fn open(&mut self, mark: Marker, seq: bool) {
        if self.skipping > 0 {
            self.skipping += 1;
            return;
        }
        if matches!(self.stack.last(), Some(Frame::Map { key: None, .. })) {
            // A collection used as a mapping key: nothing to index inside it.
            self.skipping = 1;
            return;
        }
        let path = self.node_path(mark).unwrap_or_default();
        self.stack.push(if seq {
            Frame::Seq { path, index: 0 }
        } else {
            Frame::Map { path, key: None }
        });
    }

    fn close(&mut self) {
        if self.skipping > 0 {
            self.skipping -= 1;
            if self.skipping == 0 {
                // The complex key is done; its value comes next under an unknown name.
                if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                    *key = Some("?".to_string());
                }
            }
            return;
        }
        self.stack.pop();
        self.complete();
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::MappingStart(..) => self.open(mark, false),
            Event::SequenceStart(..) => self.open(mark, true),
            Event::MappingEnd | Event::SequenceEnd => self.close(),
            Event::Scalar(text, ..) => {
                if self.skipping > 0 {
                    return;
                }
                match self.stack.last_mut() {
                    Some(Frame::Map {
                        path,
                        key: key @ None,
                    }) => {
                        let p = join(path, &text);
                        self.lines.entry(p).or_insert(mark.line());
                        *key = Some(text);
                    }
                    _ => {
                        self.node_path(mark);
                        self.complete();
                    }
                }
            }
            Event::Alias(_) if self.skipping == 0 => {
                self.node_path(mark);
                self.complete();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# a comment: timeout
listeners:
  - address: 127.0.0.1:80
target_groups:
  - name: a
    health_check:
      timeout: 1s
  - name: b
    backends: [{address: 127.0.0.1:1}]
    health_check:
      interval: 1s
      timeout: 5s
routes: []
";

    #[test]
    fn every_field_is_found_at_its_own_line() {
        let idx = LineIndex::build(TEXT);
        assert_eq!(idx.find("listeners"), Some(2));
        assert_eq!(idx.find("listeners[0].address"), Some(3));
        assert_eq!(idx.find("target_groups[0].health_check.timeout"), Some(7));
        assert_eq!(
            idx.find("target_groups[1].health_check.timeout"),
            Some(12),
            "the second group's timeout, not the first line mentioning `timeout`"
        );
        assert_eq!(idx.find("target_groups[1].backends[0].address"), Some(9));
        assert_eq!(idx.find("routes"), Some(13));
    }

    #[test]
    fn absent_fields_fall_back_to_their_nearest_ancestor() {
        let idx = LineIndex::build(TEXT);
        assert_eq!(idx.find("target_groups[1].health_check.path"), Some(10));
        assert_eq!(idx.find("target_groups[0].backends"), Some(5));
        assert_eq!(idx.exact("target_groups[0].backends"), None);
        assert_eq!(idx.find("admin.address"), Some(2), "document start");
    }

    #[test]
    fn broken_yaml_keeps_what_was_indexed() {
        let idx = LineIndex::build("listeners:\n  - address: x\n  bad: [\n");
        assert_eq!(idx.find("listeners[0].address"), Some(2));
    }
}

//! Finds the line of a key path (`trunks[1].route_to`) in a YAML document.
//!
//! serde_yaml reports line numbers for syntax and type errors, but checks that span
//! several keys (a route naming a trunk that does not exist) run after
//! deserialisation, when positions are gone. This module replays the document
//! through yaml-rust2's event parser, which marks every node, so those errors can
//! still say where to look.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Key paths, in serde_yaml's notation, mapped to 1-based line numbers.
#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Indexes `text`; a document that does not parse yields an empty index (its
    /// syntax error is reported by serde_yaml instead).
    pub fn build(text: &str) -> LineIndex {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut walker, false).is_err() {
            return LineIndex::default();
        }
        LineIndex {
            lines: walker.lines,
        }
    }

    /// The line of `path`, or of its nearest ancestor that exists.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(&line) = self.lines.get(p) {
                return Some(line);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// One open container while walking events.
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

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Walker {
    /// The path of the node that starts now, advancing the parent's state. `None`
    /// when the node is a mapping key.
    fn next_path(&mut self, key_text: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                Some(p)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => Some(if path.is_empty() {
                    k
                } else {
                    format!("{path}.{k}")
                }),
                None => {
                    // This node is a key: remember it for the value that follows.
                    *key = Some(key_text.unwrap_or_default().to_string());
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(text, ..) => {
                let is_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
                if is_key {
                    let parent = match self.stack.last() {
                        Some(Frame::Map { path, .. }) if !path.is_empty() => {
                            format!("{path}.{text}")
                        }
                        _ => text.clone(),
                    };
                    self.lines.insert(parent, line);
                    self.next_path(Some(&text));
                } else if let Some(p) = self.next_path(None) {
                    self.lines.entry(p).or_insert(line);
                }
            }
            Event::MappingStart(..) => {
                let path = self.next_path(Some("")).unwrap_or_default();
                self.lines.entry(path.clone()).or_insert(line);
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.next_path(Some("")).unwrap_or_default();
                self.lines.entry(path.clone()).or_insert(line);
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Alias(_) => {
                self.next_path(None);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_sequence_items() {
        let text = "listen: [\"udp:127.0.0.1:5060\"]\n\
trunks:\n  - name: pbx\n    route_to: nowhere\n  - name: carrier\n    outbound: { to: \"1.2.3.4:5060\" }\n\
routes:\n  - { prefix: \"00\", trunk: carrier }\n";
        let index = LineIndex::build(text);
        assert_eq!(index.line_of("listen"), Some(1));
        assert_eq!(index.line_of("trunks[0].route_to"), Some(4));
        assert_eq!(index.line_of("trunks[1].outbound.to"), Some(6));
        assert_eq!(index.line_of("routes[0].trunk"), Some(8));
        // Unknown leaf: falls back to the nearest ancestor.
        assert_eq!(index.line_of("trunks[1].inbound"), Some(5));
    }
}

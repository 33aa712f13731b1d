//! How `dmq consume` prints a record: a kcat-like format string (`-f '%k=%v\n'`) or one JSON
//! object per line; and how `dmq produce` splits a line into key and value.
//!
//! Format tokens (as kcat's `-f`):
//!
//! | token | prints |
//! |---|---|
//! | `%v` or `%s` | the value |
//! | `%k` | the key (empty when it has none) |
//! | `%S` / `%K` | value / key length in bytes (`-1` for no key) |
//! | `%t` | the topic |
//! | `%p` | the partition |
//! | `%o` | the offset |
//! | `%T` | the timestamp, milliseconds since the Unix epoch |
//! | `%h` | the headers, `k=v,k2=v2` |
//! | `%%` | `%` |
//! | `\n` `\t` `\r` `\\` `\0` | newline, tab, carriage return, backslash, NUL |
//!
//! A record's text ends with a newline unless the format itself already ends with one.

use std::str::FromStr;

use dmq_client::ConsumedRecord;
use serde_json::{Map, Value, json};

use crate::output::bytes_json;

/// The default `-f`: the value alone.
pub const DEFAULT_FORMAT: &str = "%v";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    KeyLen,
    Value,
    ValueLen,
    Timestamp,
    Headers,
}

/// A parsed `-f` format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordFormat {
    pieces: Vec<Piece>,
    /// Whether a newline follows each record (the format does not end with one).
    newline: bool,
}

impl Default for RecordFormat {
    fn default() -> RecordFormat {
        DEFAULT_FORMAT.parse().expect("the default format parses")
    }
}

impl FromStr for RecordFormat {
    type Err = String;

    fn from_str(format: &str) -> Result<RecordFormat, String> {
        let mut pieces = Vec::new();
        let mut text: Vec<u8> = Vec::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let token = match chars.next() {
                        Some('%') => {
                            text.push(b'%');
                            continue;
                        }
                        Some('v' | 's') => Piece::Value,
                        Some('k') => Piece::Key,
                        Some('S') => Piece::ValueLen,
                        Some('K') => Piece::KeyLen,
                        Some('t') => Piece::Topic,
                        Some('p') => Piece::Partition,
                        Some('o') => Piece::Offset,
                        Some('T') => Piece::Timestamp,
                        Some('h') => Piece::Headers,
                        Some(other) => {
                            return Err(format!(
                                "unknown token %{other} in {format:?}; use %v %k %S %K %t %p %o \
                                 %T %h or %% for a literal %"
                            ));
                        }
                        None => {
                            return Err(format!(
                                "{format:?} ends with a lone %; write %% for a literal %"
                            ));
                        }
                    };
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(token);
                }
                '\\' => match chars.next() {
                    Some(e) => match unescape(e) {
                        Some(b) => text.push(b),
                        None => {
                            text.push(b'\\');
                            push_char(&mut text, e);
                        }
                    },
                    None => text.push(b'\\'),
                },
                c => push_char(&mut text, c),
            }
        }
        let newline = !text.ends_with(b"\n");
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(RecordFormat { pieces, newline })
    }
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// The byte a backslash escape stands for (`n` -> newline), if it is one.
fn unescape(c: char) -> Option<u8> {
    match c {
        'n' => Some(b'\n'),
        't' => Some(b'\t'),
        'r' => Some(b'\r'),
        '0' => Some(0),
        '\\' => Some(b'\\'),
        _ => None,
    }
}

/// `s` with the escapes of a format (`\t`, `\n`, ...) replaced, for `--key-separator`.
pub fn unescape_str(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            push_char(&mut out, c);
            continue;
        }
        match chars.next() {
            Some(e) => match unescape(e) {
                Some(b) => out.push(b),
                None => {
                    out.push(b'\\');
                    push_char(&mut out, e);
                }
            },
            None => out.push(b'\\'),
        }
    }
    out
}

impl RecordFormat {
    /// Appends `r` as this format says to `out`.
    pub fn render(&self, r: &ConsumedRecord, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.extend_from_slice(t),
                Piece::Topic => out.extend_from_slice(r.topic.as_bytes()),
                Piece::Partition => out.extend_from_slice(r.partition.to_string().as_bytes()),
                Piece::Offset => out.extend_from_slice(r.offset.to_string().as_bytes()),
                Piece::Key => out.extend_from_slice(r.key.as_deref().unwrap_or_default()),
                Piece::KeyLen => {
                    let len = r.key.as_ref().map_or(-1, |k| k.len() as i64);
                    out.extend_from_slice(len.to_string().as_bytes());
                }
                Piece::Value => out.extend_from_slice(&r.value),
                Piece::ValueLen => out.extend_from_slice(r.value.len().to_string().as_bytes()),
                Piece::Timestamp => out.extend_from_slice(r.timestamp_ms.to_string().as_bytes()),
                Piece::Headers => {
                    for (i, h) in r.headers.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(h.key.as_bytes());
                        out.push(b'=');
                        out.extend_from_slice(&h.value);
                    }
                }
            }
        }
        if self.newline {
            out.push(b'\n');
        }
    }
}

/// A record as one JSON object: topic, partition, offset, timestamp_ms, key (null without
/// one), value, headers. Key, value or a header value that is not UTF-8 is given as hex
/// digits, with `"key_encoding"` / `"value_encoding"` / `"encoding"` set to `"hex"`.
pub fn record_json(r: &ConsumedRecord) -> Value {
    let mut object = Map::new();
    object.insert("topic".into(), json!(r.topic));
    object.insert("partition".into(), json!(r.partition));
    object.insert("offset".into(), json!(r.offset));
    object.insert("timestamp_ms".into(), json!(r.timestamp_ms));
    let (key, key_hex) = bytes_json(r.key.as_deref());
    object.insert("key".into(), key);
    if key_hex {
        object.insert("key_encoding".into(), json!("hex"));
    }
    let (value, value_hex) = bytes_json(Some(&r.value));
    object.insert("value".into(), value);
    if value_hex {
        object.insert("value_encoding".into(), json!("hex"));
    }
    let headers: Vec<Value> = r
        .headers
        .iter()
        .map(|h| {
            let (value, hex) = bytes_json(Some(&h.value));
            if hex {
                json!({"key": h.key, "value": value, "encoding": "hex"})
            } else {
                json!({"key": h.key, "value": value})
            }
        })
        .collect();
    object.insert("headers".into(), Value::Array(headers));
    Value::Object(object)
}

/// A stdin line as (key, value): split at the first `separator` when one is given and the
/// line holds it; otherwise the whole line is the value and there is no key (as kcat -K).
pub fn split_key<'a>(line: &'a [u8], separator: Option<&[u8]>) -> (Option<&'a [u8]>, &'a [u8]) {
    let Some(sep) = separator.filter(|s| !s.is_empty()) else {
        return (None, line);
    };
    match line.windows(sep.len()).position(|w| w == sep) {
        Some(at) => (Some(&line[..at]), &line[at + sep.len()..]),
        None => (None, line),
    }
}

/// `line` without its line ending (`\n` or `\r\n`).
pub fn trim_line_ending(mut line: &[u8]) -> &[u8] {
    if let Some(rest) = line.strip_suffix(b"\n") {
        line = rest;
        if let Some(rest) = line.strip_suffix(b"\r") {
            line = rest;
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use dmq_client::Header;

    use super::*;

    fn record() -> ConsumedRecord {
        ConsumedRecord {
            topic: "events".into(),
            partition: 2,
            offset: 41,
            timestamp_ms: 1_700_000_000_123,
            key: Some(b"user-1".to_vec()),
            value: b"hello".to_vec(),
            headers: vec![
                Header {
                    key: "a".into(),
                    value: b"1".to_vec(),
                },
                Header {
                    key: "b".into(),
                    value: b"2".to_vec(),
                },
            ],
        }
    }

    fn render(format: &str, r: &ConsumedRecord) -> String {
        let mut out = Vec::new();
        format.parse::<RecordFormat>().unwrap().render(r, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn default_prints_the_value_and_a_newline() {
        let mut out = Vec::new();
        RecordFormat::default().render(&record(), &mut out);
        assert_eq!(out, b"hello\n");
    }

    #[test]
    fn every_token() {
        let r = record();
        assert_eq!(
            render("%t/%p@%o %T %k=%v (%K,%S) [%h] 100%%", &r),
            "events/2@41 1700000000123 user-1=hello (6,5) [a=1,b=2] 100%\n"
        );
        assert_eq!(render("%s", &r), "hello\n");
    }

    #[test]
    fn escapes_and_the_trailing_newline() {
        let r = record();
        assert_eq!(
            render("%k\\t%v\\n", &r),
            "user-1\thello\n",
            "no second newline"
        );
        assert_eq!(render("%v\\r\\n", &r), "hello\r\n");
        assert_eq!(render("a\\\\b\\q", &r), "a\\b\\q\n");
        assert_eq!(render("%v\\", &r), "hello\\\n");
        assert_eq!(render("", &r), "\n");
        assert_eq!(render("é%v", &r), "éhello\n");
    }

    #[test]
    fn a_record_without_key_or_headers() {
        let r = ConsumedRecord {
            key: None,
            headers: vec![],
            ..record()
        };
        assert_eq!(render("[%k][%K][%h]", &r), "[][-1][]\n");
    }

    #[test]
    fn bad_tokens_are_refused_with_the_list() {
        let e = "%x".parse::<RecordFormat>().unwrap_err();
        assert!(e.contains("unknown token %x") && e.contains("%v"), "{e}");
        let e = "100%".parse::<RecordFormat>().unwrap_err();
        assert!(e.contains("lone %"), "{e}");
    }

    #[test]
    fn json_records() {
        let v = record_json(&record());
        assert_eq!(
            v,
            json!({
                "topic": "events", "partition": 2, "offset": 41,
                "timestamp_ms": 1_700_000_000_123_i64, "key": "user-1", "value": "hello",
                "headers": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}],
            })
        );
        let binary = ConsumedRecord {
            key: None,
            value: vec![0xff, 0],
            headers: vec![],
            ..record()
        };
        let v = record_json(&binary);
        assert_eq!(v["key"], Value::Null);
        assert_eq!(v["value"], "ff00");
        assert_eq!(v["value_encoding"], "hex");
        assert!(v.get("key_encoding").is_none());
    }

    #[test]
    fn key_separator_splits_at_the_first_occurrence() {
        assert_eq!(split_key(b"k:v", Some(b":")), (Some(&b"k"[..]), &b"v"[..]));
        assert_eq!(
            split_key(b"k:v:w", Some(b":")),
            (Some(&b"k"[..]), &b"v:w"[..])
        );
        assert_eq!(split_key(b":v", Some(b":")), (Some(&b""[..]), &b"v"[..]));
        assert_eq!(split_key(b"k:", Some(b":")), (Some(&b"k"[..]), &b""[..]));
        assert_eq!(split_key(b"novalue", Some(b":")), (None, &b"novalue"[..]));
        assert_eq!(
            split_key(b"a::b", Some(b"::")),
            (Some(&b"a"[..]), &b"b"[..])
        );
        assert_eq!(split_key(b"k:v", None), (None, &b"k:v"[..]));
        assert_eq!(split_key(b"k:v", Some(b"")), (None, &b"k:v"[..]));
        assert_eq!(
            split_key(b"k\tv", Some(&unescape_str("\\t"))),
            (Some(&b"k"[..]), &b"v"[..])
        );
    }

    #[test]
    fn line_endings() {
        assert_eq!(trim_line_ending(b"a\n"), b"a");
        assert_eq!(trim_line_ending(b"a\r\n"), b"a");
        assert_eq!(trim_line_ending(b"a"), b"a");
        assert_eq!(trim_line_ending(b"a\r"), b"a\r");
        assert_eq!(trim_line_ending(b"\n"), b"");
        assert_eq!(unescape_str("a\\tb\\\\"), b"a\tb\\");
        assert_eq!(unescape_str("::"), b"::");
    }
}

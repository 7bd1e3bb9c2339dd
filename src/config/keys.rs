//! Every unknown key of a config, each with its position and a "did you mean" suggestion.
//!
//! serde's `deny_unknown_fields` stops at the first unknown key, so `check` would hide the
//! rest (issue 15 §3). Instead the file is walked once as a tree of spanned keys and every
//! key is compared with the fields of the `raw` struct for its table. The field lists are
//! read from the `raw` structs themselves (see [`fields_of`]), so they cannot drift apart.

use std::ops::Range;

use super::raw::{RawBackoff, RawFile, RawHealth, RawLogs, RawReady, RawService, RawSupervisor};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// An unknown key: where, and the message.
pub struct Unknown {
    pub span: Range<usize>,
    pub message: String,
}

/// A TOML document as keys and spans only; values are not kept.
enum Node {
    Table(Vec<(Key, Node)>),
    /// Elements are not walked: no array of this schema holds tables.
    Array,
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any TOML value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = map.next_key::<Key>()? {
            let v = map.next_value::<Node>()?;
            out.push((k, v));
        }
        Ok(Node::Table(out))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        while seq.next_element::<Node>()?.is_some() {}
        Ok(Node::Array)
    }
}

/// A table key with its span when the deserializer has one. Keys of the internal map toml
/// uses for a datetime have none; `Spanned<String>` would fail on those and take the whole
/// walk down with it, so this asks for a span the way `Spanned` does and also takes a bare
/// string.
struct Key {
    name: String,
    span: Range<usize>,
}

impl Key {
    fn get_ref(&self) -> &String {
        &self.name
    }
    fn span(&self) -> Range<usize> {
        self.span.clone()
    }
}

// The protocol `toml` speaks with `serde_spanned` (0.6) to hand out spans.
const SPANNED: &str = "$__serde_spanned_private_Spanned";
const START: &str = "$__serde_spanned_private_start";
const END: &str = "$__serde_spanned_private_end";
const VALUE: &str = "$__serde_spanned_private_value";

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, s: &str) -> Result<Key, E> {
                Ok(Key {
                    name: s.to_string(),
                    span: 0..0,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
                let (mut start, mut end, mut name) = (0usize, 0usize, None);
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        START => start = map.next_value()?,
                        END => end = map.next_value()?,
                        VALUE => name = Some(map.next_value::<String>()?),
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                let name = name.ok_or_else(|| de::Error::custom("a key without a name"))?;
                Ok(Key {
                    name,
                    span: start..end,
                })
            }
        }
        d.deserialize_struct(SPANNED, &[START, END, VALUE], V)
    }
}

/// The field names serde's derive gave `T`, captured from its `deserialize_struct` call.
pub fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Grab(Option<&'static [&'static str]>);
    impl<'de> Deserializer<'de> for &mut Grab {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only structs"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("fields captured"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut g = Grab(None);
    let _ = T::deserialize(&mut g);
    g.0.unwrap_or(&[])
}

/// What a table holds.
#[derive(Clone, Copy)]
enum Shape {
    /// Fields of a raw struct; some of them are themselves tables.
    Struct(&'static str),
    /// Keys chosen by the user (service names, variable names), each holding `inner`.
    Map(&'static Shape),
    /// Anything: values are checked by the typed pass.
    Free,
}

const SERVICE: Shape = Shape::Struct("service");
const SERVICES: Shape = Shape::Map(&SERVICE);

fn fields(name: &str) -> &'static [&'static str] {
    match name {
        "file" => fields_of::<RawFile>(),
        "supervisor" => fields_of::<RawSupervisor>(),
        "logs" => fields_of::<RawLogs>(),
        "service" => fields_of::<RawService>(),
        "ready" => fields_of::<RawReady>(),
        "health" => fields_of::<RawHealth>(),
        "backoff" => fields_of::<RawBackoff>(),
        _ => &[],
    }
}

/// The shape of field `key` inside struct `parent`.
fn child(parent: &str, key: &str) -> Shape {
    match (parent, key) {
        ("file", "supervisor") => Shape::Struct("supervisor"),
        ("file", "logs") => Shape::Struct("logs"),
        ("file", "services") => SERVICES,
        ("service", "ready") => Shape::Struct("ready"),
        ("service", "health") => Shape::Struct("health"),
        ("service", "backoff") => Shape::Struct("backoff"),
        _ => Shape::Free,
    }
}

/// Every unknown key of `text`; empty when the text is not TOML (the typed pass says why).
pub fn unknown_keys(text: &str) -> Vec<Unknown> {
    let Ok(root) = toml::from_str::<Node>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(&root, Shape::Struct("file"), "", &mut out);
    out
}

fn walk(node: &Node, shape: Shape, path: &str, out: &mut Vec<Unknown>) {
    let Node::Table(entries) = node else { return };
    match shape {
        Shape::Free => {}
        Shape::Map(inner) => {
            for (k, v) in entries {
                walk(v, *inner, &join(path, k.get_ref()), out);
            }
        }
        Shape::Struct(name) => {
            let known = fields(name);
            for (k, v) in entries {
                let key = k.get_ref();
                if known.contains(&key.as_str()) {
                    walk(v, child(name, key), &join(path, key), out);
                } else {
                    out.push(Unknown {
                        span: k.span(),
                        message: message(key, path, known),
                    });
                }
            }
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn message(key: &str, path: &str, known: &[&str]) -> String {
    let place = if path.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in [{path}]")
    };
    match suggest(key, known) {
        Some(s) => format!("unknown key `{key}` {place}; did you mean `{s}`?"),
        None => format!(
            "unknown key `{key}` {place}; the keys here are {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The closest known key, when it is close enough to be a typo.
pub fn suggest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase().replace('-', "_");
    let best = known
        .iter()
        .map(|k| (distance(&lower, k), *k))
        .min_by_key(|(d, _)| *d)?;
    let allowed = match lower.chars().count() {
        0..=3 => 1,
        4..=8 => 2,
        _ => 3,
    };
    // A known key that the unknown one starts with: `max_memory_restart` → `max_memory`.
    let prefix = known
        .iter()
        .filter(|k| lower.starts_with(&format!("{k}_")))
        .max_by_key(|k| k.len());
    if best.0 <= allowed {
        Some(best.1)
    } else {
        prefix.copied()
    }
}

/// Optimal string alignment distance: Levenshtein plus adjacent transpositions, so
/// `restrat` is one edit from `restart`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lists_come_from_the_raw_structs() {
        assert!(fields_of::<RawService>().contains(&"command"));
        assert!(fields_of::<RawFile>().contains(&"services"));
        assert!(fields_of::<RawBackoff>().contains(&"factor"));
    }

    #[test]
    fn suggestions() {
        let k = fields_of::<RawService>();
        assert_eq!(suggest("comand", k), Some("command"));
        assert_eq!(suggest("restrat", k), Some("restart"));
        assert_eq!(suggest("max_memory_restart", k), Some("max_memory"));
        assert_eq!(suggest("stop-timeout", k), Some("stop_timeout"));
        assert_eq!(suggest("zzzzzzzzzz", k), None);
        assert_eq!(
            suggest("statedir", fields_of::<RawSupervisor>()),
            Some("state_dir")
        );
    }

    #[test]
    fn every_unknown_key_is_found() {
        let text = "[supervisor]\nstatedir = 1\n[logs]\nkeeep = 2\n[services.a]\ncomand = \"x\"\nrestrat = \"always\"\nenv = { ANY_NAME = 1 }\nbackoff = { intial = \"1s\" }\n[services.a.health]\nhttp = \"x\"\nretires = 3\n[servics.b]\n";
        let got: Vec<String> = unknown_keys(text).into_iter().map(|u| u.message).collect();
        assert_eq!(got.len(), 7, "{got:#?}");
        assert!(got[0].contains("`statedir` in [supervisor]; did you mean `state_dir`?"));
        assert!(got
            .iter()
            .any(|m| m.contains("`comand` in [services.a]; did you mean `command`?")));
        assert!(got
            .iter()
            .any(|m| m.contains("`restrat` in [services.a]; did you mean `restart`?")));
        assert!(got
            .iter()
            .any(|m| m.contains("`intial` in [services.a.backoff]; did you mean `initial`?")));
        assert!(got
            .iter()
            .any(|m| m.contains("`retires` in [services.a.health]; did you mean `retries`?")));
        assert!(got
            .iter()
            .any(|m| m.contains("`servics` at the top level; did you mean `services`?")));
    }
}

//! serde_json's pretty layout laid over JSON text as it came from the daemon: what
//! `to_string_pretty` prints for the value, without parsing the value into structs and
//! serializing it again. At a thousand services that round trip was most of `status
//! --json`'s time.

/// Re-indents `json` (valid JSON, any spacing) the way `serde_json::to_string_pretty`
/// lays out the same value: two spaces a level, `"key": value`, `[]` and `{}` when empty.
/// Strings and numbers are copied as they are.
pub fn pretty(json: &str) -> String {
    let b = json.as_bytes();
    let mut out = Vec::with_capacity(b.len() + b.len() / 2);
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' => {
                let start = i;
                i += 1;
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                out.extend_from_slice(&b[start..i.min(b.len())]);
                continue;
            }
            b'{' | b'[' => {
                let close = if c == b'{' { b'}' } else { b']' };
                let mut j = i + 1;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                if b.get(j) == Some(&close) {
                    out.extend_from_slice(&[c, close]);
                    i = j + 1;
                    continue;
                }
                depth += 1;
                out.push(c);
                newline(&mut out, depth);
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            b',' => {
                out.push(b',');
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            c if c.is_ascii_whitespace() => {}
            _ => out.push(c),
        }
        i += 1;
    }
    // Only ASCII was added, and strings were copied whole: still UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn newline(out: &mut Vec<u8>, depth: usize) {
    out.push(b'\n');
    out.resize(out.len() + 2 * depth, b' ');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            // Quotes, backslashes, controls, non-ASCII, brackets and commas inside strings.
            "[\"\\\\a-z{}\\[\\],: \\n\\t\u{1}é€😀]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\"{:,]{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn lays_out_compact_json_as_to_string_pretty_does(v in value()) {
            let compact = serde_json::to_string(&v).expect("serializes");
            let want = serde_json::to_string_pretty(&v).expect("serializes");
            prop_assert_eq!(pretty(&compact), want.clone());
            // Already pretty in, the same out.
            prop_assert_eq!(pretty(&want), want);
        }
    }

    #[test]
    fn empty_containers_and_a_status_answer() {
        assert_eq!(pretty("[]"), "[]");
        assert_eq!(
            pretty("{\"a\":[],\"b\":{}}"),
            "{\n  \"a\": [],\n  \"b\": {}\n}"
        );
        let status = serde_json::json!([{"name": "api", "pid": null, "last_exit": {"code": 1, "signal": null}, "cpu_percent": 0.1}]);
        assert_eq!(
            pretty(&status.to_string()),
            serde_json::to_string_pretty(&status).expect("serializes")
        );
    }
}

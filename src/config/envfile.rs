//! dotenv files, read by the supervisor itself (PM2 silently ignored them: seed 004).

use std::path::Path;

use super::diagnostics::Diagnostic;

/// One `KEY=VALUE` of an env file, with its 1-based line for `lmctl env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileEntry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Parses dotenv syntax: `KEY=VALUE`, `export KEY=VALUE`, `#` comments, blank lines,
/// single quotes (literal) and double quotes (with `\n`, `\t`, `\"`, `\\` escapes).
pub fn parse(path: &Path, text: &str) -> Result<Vec<EnvFileEntry>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, raw_line) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw_line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, rest)) = line.split_once('=') else {
            errors.push(Diagnostic::at(path, lineno, 1, "expected KEY=VALUE"));
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            errors.push(Diagnostic::at(
                path,
                lineno,
                1,
                format!("invalid variable name {key:?}: use letters, digits and _"),
            ));
            continue;
        }
        let rest = rest.trim();
        let value = if let Some(body) = rest.strip_prefix('"') {
            match unescape_double(body) {
                Some(v) => v,
                None => {
                    errors.push(Diagnostic::at(
                        path,
                        lineno,
                        1,
                        format!("unterminated double quote in the value of {key}"),
                    ));
                    continue;
                }
            }
        } else if let Some(body) = rest.strip_prefix('\'') {
            match body.find('\'') {
                Some(end) => body[..end].to_string(),
                None => {
                    errors.push(Diagnostic::at(
                        path,
                        lineno,
                        1,
                        format!("unterminated single quote in the value of {key}"),
                    ));
                    continue;
                }
            }
        } else {
            // An unquoted value ends at an inline comment.
            match rest.find(" #") {
                Some(end) => rest[..end].trim_end().to_string(),
                None => rest.to_string(),
            }
        };
        out.push(EnvFileEntry {
            key: key.to_string(),
            value,
            line: lineno,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn unescape_double(body: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dotenv() {
        let text = "# c\nA=1\nexport B = two words # note\nC=\"x\\ny\"\nD='$lit'\n\n";
        let got = parse(Path::new(".env"), text).unwrap();
        let kv: Vec<_> = got
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str(), e.line))
            .collect();
        assert_eq!(
            kv,
            vec![
                ("A", "1", 2),
                ("B", "two words", 3),
                ("C", "x\ny", 4),
                ("D", "$lit", 5)
            ]
        );
    }

    #[test]
    fn reports_bad_lines() {
        let errs = parse(Path::new(".env"), "A=1\nnot a pair\nB=\"open\n").unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].to_string(), ".env:2:1: expected KEY=VALUE");
        assert!(errs[1].to_string().starts_with(".env:3:1: unterminated"));
    }
}

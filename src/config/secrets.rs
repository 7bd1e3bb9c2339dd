//! Which values are secret, and how they are shown: `lmctl env`, `lmctl show`, the spawn
//! event (and so `supervisor.log`, `lmctl logs` and the daemon's stderr) all go through here.

use std::borrow::Cow;

/// What a masked value (or the masked part of one) is replaced by.
pub const MASK: &str = "********";

/// Fragments that make a variable name secret wherever they appear in it.
pub const SECRET_FRAGMENTS: &[&str] = &[
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "TOKEN",
    "KEY",
    "CREDENTIAL",
    "AUTH",
];

/// Does a variable of this name hold a secret? Besides [`SECRET_FRAGMENTS`] and the
/// config's own `secret_keys`, `*_PAT` (GitHub's personal access tokens). `PAT` only as a
/// suffix: as a fragment it would mask `PATH`.
pub fn is_secret_name(name: &str, extra: &[String]) -> bool {
    let k = name.to_ascii_uppercase();
    SECRET_FRAGMENTS.iter().any(|p| k.contains(p))
        || k == "PAT"
        || k.ends_with("_PAT")
        || extra
            .iter()
            .any(|p| !p.is_empty() && k.contains(&p.to_ascii_uppercase()))
}

/// Masks the password of every URL in `text`: `mysql://user:pass@host/db` →
/// `mysql://user:********@host/db`. Text without such a URL is returned as is.
pub fn mask_url_passwords(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#' or whitespace.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) if colon + 1 < userinfo.len() => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str(MASK);
                        out.push_str(&authority[at..]);
                        changed = true;
                    }
                    _ => out.push_str(authority),
                }
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// How a variable is shown without `--reveal`: (text, whether anything was masked).
pub fn shown_value(name: &str, value: &str, extra: &[String]) -> (String, bool) {
    if is_secret_name(name, extra) {
        return (MASK.to_string(), true);
    }
    match mask_url_passwords(value) {
        Cow::Owned(s) => (s, true),
        Cow::Borrowed(s) => (s.to_string(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for k in [
            "JWT_SECRET",
            "api_key",
            "GITHUB_PAT",
            "PAT",
            "AWS_CREDENTIALS",
            "GOOGLE_APPLICATION_CREDENTIAL",
            "BASIC_AUTH",
            "AUTHORIZATION",
            "DB_PASSWD",
            "API_TOKEN",
        ] {
            assert!(is_secret_name(k, &[]), "{k}");
        }
        for k in ["PATH", "PORT", "HOME", "PATTERN", "DATABASE_URL", "LANG"] {
            assert!(!is_secret_name(k, &[]), "{k}");
        }
        assert!(is_secret_name("DATABASE_URL", &["database_url".into()]));
        assert!(!is_secret_name("PORT", &[String::new()]));
    }

    #[test]
    fn url_passwords() {
        assert_eq!(
            mask_url_passwords("mysql://user:pass@db:3306/x"),
            "mysql://user:********@db:3306/x"
        );
        assert_eq!(
            mask_url_passwords("--db=postgres://u:p%40ss@h/db --other=https://a:b@c"),
            "--db=postgres://u:********@h/db --other=https://a:********@c"
        );
        // A password containing '@' still ends at the last '@' of the authority.
        assert_eq!(
            mask_url_passwords("redis://:p@ss@h:6379"),
            "redis://:********@h:6379"
        );
        for plain in [
            "http://127.0.0.1:3001/health",
            "sqlite://var/hub.db",
            "http://user@host/",
            "no url",
            "x://",
        ] {
            assert!(
                matches!(mask_url_passwords(plain), Cow::Borrowed(_)),
                "{plain}"
            );
        }
    }

    #[test]
    fn shown_values() {
        assert_eq!(
            shown_value("JWT_SECRET", "s3cr3t", &[]),
            (MASK.into(), true)
        );
        assert_eq!(
            shown_value("DATABASE_URL", "mysql://u:p@h/db", &[]),
            ("mysql://u:********@h/db".into(), true)
        );
        assert_eq!(shown_value("PORT", "3001", &[]), ("3001".into(), false));
    }
}

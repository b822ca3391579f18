//! Database URLs for people to read: what `Debug`, banners and logs show of a connection
//! URL, with every secret in it replaced.

/// What a secret reads as.
const MASK: &str = "***";

/// `url` with its secrets replaced by `***`: the password of its user information
/// (`postgres://user:***@host/db`) and the value of every query parameter whose name speaks
/// of a password, secret or token (`password`, `sslpassword`, Redis's `pass`, …). A URL
/// that does not parse is shown as its scheme alone (`postgres://***`), so nothing it holds
/// can leak.
///
/// ```
/// use keygate::store::redact_url;
///
/// assert_eq!(
///     redact_url("postgres://keygate:s3cret@db.internal:5432/keygate?sslmode=require"),
///     "postgres://keygate:***@db.internal:5432/keygate?sslmode=require",
/// );
/// assert_eq!(
///     redact_url("postgres://keygate@db.internal/keygate?password=s3cret"),
///     "postgres://keygate@db.internal/keygate?password=***",
/// );
/// assert_eq!(redact_url("redis://:s3cret@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
/// ```
#[must_use]
pub fn redact_url(url: &str) -> String {
    redacted(url).unwrap_or_else(|| scheme_only(url))
}

fn redacted(url: &str) -> Option<String> {
    let mut parsed = url::Url::parse(url).ok()?;
    if parsed.password().is_some() {
        parsed.set_password(Some(MASK)).ok()?;
    }
    if parsed.query_pairs().any(|(k, _)| is_secret(&k)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret(&k) {
                    MASK.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Some(parsed.into())
}

/// `postgres://***` for a URL that does not parse; `***` without a readable scheme.
fn scheme_only(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
        {
            format!("{scheme}://{MASK}")
        }
        _ => MASK.to_owned(),
    }
}

/// A query parameter that carries a secret: its name mentions a password, secret or token.
pub(crate) fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token"]
        .iter()
        .any(|w| key.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_form_of_password_survives() {
        for (url, secret) in [
            ("postgres://u:pw-1@h/db", "pw-1"),
            (
                "postgresql://u:p%40ss%3Aw@h:5432/db?sslmode=disable",
                "p%40ss",
            ),
            ("postgres://u@h/db?password=pw-2&sslmode=require", "pw-2"),
            ("postgres://u@h/db?sslpassword=pw-3", "pw-3"),
            ("postgres://u:pw-4@h/db?password=pw-5", "pw-5"),
            ("redis://:pw-6@h:6379/0", "pw-6"),
            ("redis+unix:///tmp/redis.sock?db=1&pass=pw-7", "pw-7"),
            ("postgres://u:pw-8@h1:5432,h2:5432/db", "pw-8"),
            ("not a url pw-9", "pw-9"),
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url} -> {shown}");
            assert!(shown.contains(MASK), "{url} -> {shown}");
        }
        assert_eq!(
            redact_url("postgres://u:pw@h1,h2/db"),
            "postgres://u:***@h1,h2/db"
        );
        assert_eq!(redact_url("postgres://u:pw@h1:1,h2:2/db"), "postgres://***");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }
}

//! The TOML configuration file: its single values, its `[roles]` and its `[kinds.*]`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::settings::SETTINGS;
use super::{ConfigProblem, Layer};
use crate::identity::Roles;
use crate::token::TokenKind;

/// What a file holds: its single values as text, and its tables.
#[derive(Default)]
pub(super) struct FileValues {
    pub(super) layer: Layer,
    pub(super) roles: Option<Roles>,
    pub(super) kinds: Option<Vec<TokenKind>>,
}

/// `[kinds.<name>]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KindTable {
    /// Default: the kind's name.
    prefix: Option<String>,
    /// A number, or `"unlimited"`.
    max_live_per_owner: Option<LiveLimit>,
    /// Seconds.
    max_lifetime: Option<u64>,
    binding_header: Option<String>,
    /// Seconds without use after which a token of the kind is revoked (a bound one loses
    /// its seat instead).
    inactivity_expiry: Option<u64>,
    /// A legacy format's exact length after `<prefix>_`.
    legacy_length: Option<usize>,
    /// `base64url`, `hex` or `alphanumeric`.
    legacy_alphabet: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LiveLimit {
    Count(u32),
    Word(String),
}

/// Reads `path`; every problem found is pushed to `problems` (the rest is still read).
pub(super) fn read(path: &Path, problems: &mut Vec<ConfigProblem>) -> FileValues {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => read_text(shown, &text, problems),
        Err(e) => {
            problems.push(ConfigProblem::new(
                shown,
                format!("cannot read the file: {e}"),
            ));
            FileValues::default()
        }
    }
}

/// Reads the text of a file called `shown` in problems; every problem found is pushed to
/// `problems` (the rest is still read).
pub(super) fn read_text(
    shown: String,
    text: &str,
    problems: &mut Vec<ConfigProblem>,
) -> FileValues {
    let mut out = FileValues::default();
    let table = match toml::from_str::<toml::Table>(text) {
        Ok(table) => table,
        Err(e) => {
            // The message without the quoted line: that line may hold a password.
            let at = e.span().map_or_else(String::new, |span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("line {line}, column {column}: ")
            });
            problems.push(ConfigProblem::new(
                shown,
                format!("not valid TOML: {at}{}", e.message().trim()),
            ));
            return out;
        }
    };
    for (key, value) in table {
        let at = format!("{shown}: {key}");
        match key.as_str() {
            "roles" => out.roles = roles(&at, value, problems),
            "kinds" => out.kinds = kinds(&at, value, problems),
            _ => {
                let known = SETTINGS.iter().any(|s| {
                    s.key() == key || (s.is_secret() && key.strip_suffix("_file") == Some(s.key()))
                });
                if !known {
                    problems.push(ConfigProblem::new(at, "unknown key".to_owned()));
                    continue;
                }
                match text_of(&value) {
                    Some(v) => out.layer.push(&key, v, at),
                    None => problems.push(ConfigProblem::new(
                        at,
                        "must be a string, a number, true/false or a list of them".to_owned(),
                    )),
                }
            }
        }
    }
    out
}

/// A single value as the text an environment variable would hold (a list: comma-separated).
fn text_of(value: &toml::Value) -> Option<String> {
    use toml::Value;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Integer(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Boolean(b) => Some(b.to_string()),
        Value::Datetime(d) => Some(d.to_string()),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::Array(_) | Value::Table(_) => None,
                v => text_of(v),
            })
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        Value::Table(_) => None,
    }
}

/// `[roles]`: `name = ["permission", ...]`; it replaces the default roles.
fn roles(at: &str, value: toml::Value, problems: &mut Vec<ConfigProblem>) -> Option<Roles> {
    let table: BTreeMap<String, Vec<String>> = match value.try_into() {
        Ok(t) => t,
        Err(e) => {
            problems.push(ConfigProblem::new(
                at.to_owned(),
                format!(
                    "must be a table of lists of permissions, e.g. viewer = [\"apps:read\"] ({})",
                    e.message().trim()
                ),
            ));
            return None;
        }
    };
    let mut roles = Roles::new();
    let mut ok = true;
    for (name, permissions) in table {
        match roles.clone().with_role(&name, &permissions) {
            Ok(r) => roles = r,
            Err(e) => {
                ok = false;
                problems.push(ConfigProblem::new(format!("{at}.{name}"), e.to_string()));
            }
        }
    }
    ok.then_some(roles)
}

/// `[kinds.<name>]`, in the file's order: the first is the default for tokens naming none.
fn kinds(
    at: &str,
    value: toml::Value,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Vec<TokenKind>> {
    let toml::Value::Table(table) = value else {
        problems.push(ConfigProblem::new(
            at.to_owned(),
            "must be tables, e.g. [kinds.pat] prefix = \"pat\"".to_owned(),
        ));
        return None;
    };
    if table.is_empty() {
        problems.push(ConfigProblem::new(
            at.to_owned(),
            "names no kind; leave it out for the default kind pat".to_owned(),
        ));
        return None;
    }
    let before = problems.len();
    let mut kinds: Vec<TokenKind> = Vec::new();
    for (name, value) in table {
        let at = format!("{at}.{name}");
        let spec: KindTable = match value.try_into() {
            Ok(spec) => spec,
            Err(e) => {
                problems.push(ConfigProblem::new(at, e.message().trim().to_owned()));
                continue;
            }
        };
        match kind(&name, spec) {
            Ok(kind) => {
                if let Some(other) = kinds.iter().find(|k| k.prefix() == kind.prefix()) {
                    problems.push(ConfigProblem::new(
                        at,
                        format!(
                            "the prefix {:?} is the kind {:?}'s already",
                            kind.prefix(),
                            other.name()
                        ),
                    ));
                } else {
                    kinds.push(kind);
                }
            }
            Err(message) => problems.push(ConfigProblem::new(at, message)),
        }
    }
    (problems.len() == before).then_some(kinds)
}

fn kind(name: &str, spec: KindTable) -> Result<TokenKind, String> {
    let prefix = spec.prefix.unwrap_or_else(|| name.to_owned());
    let mut kind = TokenKind::new(name, prefix).map_err(|e| e.to_string())?;
    match spec.max_live_per_owner {
        None => {}
        Some(LiveLimit::Count(0)) => {
            return Err("max_live_per_owner must be above 0, or \"unlimited\"".to_owned());
        }
        Some(LiveLimit::Count(n)) => kind = kind.with_max_live_per_owner(Some(n)),
        Some(LiveLimit::Word(w)) if w == "unlimited" => kind = kind.with_max_live_per_owner(None),
        Some(LiveLimit::Word(w)) => {
            return Err(format!(
                "max_live_per_owner must be a number or \"unlimited\", not {w:?}"
            ));
        }
    }
    match spec.max_lifetime {
        None => {}
        Some(0) => return Err("max_lifetime must be a positive number of seconds".to_owned()),
        Some(s) => kind = kind.with_max_lifetime(Duration::from_secs(s)),
    }
    if let Some(header) = spec.binding_header {
        kind = kind.with_binding(&header).map_err(|e| e.to_string())?;
    }
    match spec.inactivity_expiry {
        None => {}
        Some(0) => {
            return Err("inactivity_expiry must be a positive number of seconds".to_owned());
        }
        Some(s) => kind = kind.with_inactivity_expiry(Some(Duration::from_secs(s))),
    }
    match (spec.legacy_length, spec.legacy_alphabet) {
        (None, None) => {}
        (Some(len), Some(alphabet)) => {
            let alphabet = alphabet.parse::<crate::token::LegacyAlphabet>()?;
            kind = kind
                .with_legacy_format(crate::token::LegacyFormat { len, alphabet })
                .map_err(|e| e.to_string())?;
        }
        _ => {
            return Err("legacy_length and legacy_alphabet go together".to_owned());
        }
    }
    Ok(kind)
}

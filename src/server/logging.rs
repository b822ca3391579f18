//! The server's log lines: [`LogFormat`], [`init_logging`] and [`log_subscriber`].

use std::fmt;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use super::BoxError;

/// How the server writes its log lines (`KEYGATE_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFormat {
    /// Lines for people, and the start banner with commands to try (the default).
    #[default]
    Text,
    /// One JSON object a line, the start banner included (as events naming the address and
    /// the database); for log shippers. The generated admin password is then never logged:
    /// it goes to a file (see [`serve`](super::serve)).
    Json,
}

/// A `KEYGATE_LOG_FORMAT` value other than `text` or `json`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the log format must be `text` or `json`, not {0:?}")]
pub struct UnknownLogFormat(String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    /// `text` or `json`, in any case, surrounding blanks ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(UnknownLogFormat(s.to_owned())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

impl LogFormat {
    /// `KEYGATE_LOG_FORMAT`, [`Text`](Self::Text) when unset or blank. A program reads it
    /// before the rest of the configuration, so that even a configuration error is logged
    /// in the chosen format.
    ///
    /// # Errors
    ///
    /// A value other than `text` or `json`.
    pub fn from_env() -> Result<Self, UnknownLogFormat> {
        match std::env::var("KEYGATE_LOG_FORMAT") {
            Ok(v) if !v.trim().is_empty() => v.parse(),
            _ => Ok(Self::default()),
        }
    }
}

/// The server's subscriber writing to `writer`: events at the level `RUST_LOG` asks for
/// (default `info`), as text or as one JSON object a line (the event's fields at the top
/// level, with `timestamp`, `level`, `target` and the request's span). Without colours.
/// [`init_logging`] installs it over standard output; tests hand it a writer of their own.
pub fn log_subscriber<W>(format: LogFormat, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    build(format, writer, false)
}

fn build<W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
    }
}

/// Installs the server's subscriber ([`log_subscriber`]) over standard output as the
/// process's global one, in colour when text goes to a terminal. Call it once, first
/// thing: [`serve`](super::serve) then writes every line through it (in
/// [`LogFormat::Json`] the start banner too).
///
/// # Errors
///
/// A global subscriber is already installed.
pub fn init_logging(format: LogFormat) -> Result<(), BoxError> {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing::subscriber::set_global_default(build(format, std::io::stdout, ansi))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_in_any_case_and_refuse_the_rest() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!(" JSON ".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("Text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        let err = "logfmt".parse::<LogFormat>().unwrap_err();
        assert!(err.to_string().contains("`text` or `json`"), "{err}");
    }
}

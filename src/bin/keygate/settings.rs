//! The server's settings as command-line flags, one per [`Setting`] (and one per secret's
//! file), each showing its variable and default in `--help`.
//!
//! Only a value typed on the command line is taken from here: the environment, the file
//! and the defaults are read by [`keygate::server::ConfigLoader`], in that order below it.

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use keygate::server::{Config, ConfigLoader, Setting};

/// The settings every command takes (the database), as global flags.
const GLOBAL: &[&str] = &["db", "db_schema"];

/// The flags of the settings in [`GLOBAL`] (`true`) or of every other one (`false`), with
/// the values typed on the command line.
#[derive(Clone, Debug, Default)]
pub struct SettingFlags<const G: bool> {
    values: Vec<(String, String)>,
}

impl<const G: bool> SettingFlags<G> {
    /// Adds the values typed on the command line to `loader`.
    pub fn apply(&self, loader: ConfigLoader) -> ConfigLoader {
        self.values
            .iter()
            .fold(loader, |l, (key, value)| l.with_flag(key, value))
    }

    fn settings() -> impl Iterator<Item = &'static Setting> {
        Config::settings()
            .iter()
            .filter(|s| GLOBAL.contains(&s.key()) == G)
    }

    /// Each flag: (id, flag, variable, help).
    fn flags() -> Vec<(String, String, &'static str, String)> {
        let mut out = Vec::new();
        for s in Self::settings() {
            let default = s.default_value();
            out.push((
                s.key().to_owned(),
                s.flag(),
                s.env(),
                format!("{} [default: {default}]", capitalised(s.help())),
            ));
            if let Some(file_env) = s.file_env() {
                out.push((
                    format!("{}_file", s.key()),
                    format!("{}-file", s.flag()),
                    file_env,
                    format!(
                        "A file holding --{} (its trailing line break removed); not with --{} itself",
                        s.flag(),
                        s.flag()
                    ),
                ));
            }
        }
        out
    }
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |c| {
        c.to_uppercase().chain(chars).collect::<String>()
    })
}

impl<const G: bool> Args for SettingFlags<G> {
    fn augment_args(cmd: Command) -> Command {
        Self::flags()
            .into_iter()
            .fold(cmd, |cmd, (id, flag, env, help)| {
                cmd.arg(
                    Arg::new(id)
                        .long(flag)
                        .env(env)
                        // A secret's value (or a URL holding one) is never shown in --help.
                        .hide_env_values(true)
                        .value_name("VALUE")
                        .help(help)
                        .global(G),
                )
            })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl<const G: bool> FromArgMatches for SettingFlags<G> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for (id, ..) in Self::flags() {
            if matches.value_source(&id) == Some(ValueSource::CommandLine)
                && let Some(value) = matches.get_one::<String>(&id)
            {
                self.values.push((id, value.clone()));
            }
        }
        Ok(())
    }
}

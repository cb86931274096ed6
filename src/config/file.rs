//! The optional TOML config file of `userdir serve` and `userdir migrate`
//! (`--config FILE` or `USERDIR_CONFIG`).
//!
//! Its keys are the long flag names (`listen`, `database_url` or
//! `database-url`, `tls_cert`...), so there is still one typed [`Config`]
//! with one set of checks: the file's settings become flags, placed before
//! any the command line gives, and only for settings that neither the
//! command line nor a `USERDIR_*` variable set. Precedence: flags, then
//! environment, then the file, then the defaults. A key that is not a
//! setting of `serve` is an error (a typo must not pass silently); `migrate`
//! takes the keys it knows from the same file. Nothing the file holds is
//! ever echoed: a syntax error is reported by line and column only.
//!
//! [`Config`]: super::Config

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory as _};

use crate::cli::Cli;

/// Flags that are not settings a file may hold.
const NOT_SETTINGS: [&str; 3] = ["config", "print_config", "help"];

/// Why the config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read the config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the config file {path} is not valid TOML at line {line}, column {column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("the config file {path} has an unknown key `{key}`; known keys: {known}")]
    UnknownKey { path: PathBuf, key: String, known: String },
    #[error("the config file {path}: `{key}` must be {expected}")]
    Type {
        path: PathBuf,
        key: String,
        expected: &'static str,
    },
}

/// Settings the file supplied, to name them when one does not parse.
#[derive(Debug, Default)]
pub struct FromFile {
    path: Option<PathBuf>,
    /// (flag, key) of each setting taken from the file.
    flags: Vec<(String, String)>,
}

impl FromFile {
    /// For a command-line error about a setting that came from the file:
    /// which key of which file it was.
    pub fn explain(&self, error: &clap::Error) -> Option<String> {
        let path = self.path.as_ref()?;
        let arg = error.get(clap::error::ContextKind::InvalidArg)?.to_string();
        let (_, key) = self
            .flags
            .iter()
            .find(|(flag, _)| arg == *flag || arg.starts_with(&format!("{flag} ")))?;
        Some(format!(
            "the value of `{key}` in the config file {} is not valid:",
            path.display()
        ))
    }
}

/// The command line with the config file's settings added, if `serve` or
/// `migrate` names one. A command line that does not parse is returned as
/// it is, for the real parse to report.
pub fn apply(args: Vec<OsString>) -> Result<(Vec<OsString>, FromFile), ConfigFileError> {
    let command = Cli::command();
    let Ok(matches) = command.clone().try_get_matches_from(&args) else {
        return Ok((args, FromFile::default()));
    };
    let Some((name, sub)) = matches.subcommand() else {
        return Ok((args, FromFile::default()));
    };
    let Some(path) = sub.try_get_one::<PathBuf>("config").ok().flatten().cloned() else {
        return Ok((args, FromFile::default()));
    };
    let (Some(serve), Some(target)) = (command.find_subcommand("serve"), command.find_subcommand(name)) else {
        return Ok((args, FromFile::default()));
    };
    let table = read(&path)?;
    let mut injected = Vec::new();
    let mut from_file = FromFile {
        path: Some(path.clone()),
        flags: Vec::new(),
    };
    for (key, value) in &table {
        let id = key.replace('-', "_");
        let known = |arg: &&clap::Arg| arg.get_id() == id.as_str() && !NOT_SETTINGS.contains(&id.as_str());
        if !serve.get_arguments().any(|arg| known(&arg)) {
            return Err(ConfigFileError::UnknownKey {
                path,
                key: key.clone(),
                known: known_keys(serve),
            });
        }
        let Some(arg) = target.get_arguments().find(known) else {
            continue; // a setting of `serve` only
        };
        let set_elsewhere = matches!(
            sub.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if set_elsewhere {
            continue;
        }
        let Some(long) = arg.get_long() else {
            continue;
        };
        let flag = format!("--{long}");
        let type_error = |expected| ConfigFileError::Type {
            path: path.clone(),
            key: key.clone(),
            expected,
        };
        if let (toml::Value::Array(items), ArgAction::Append) = (value, arg.get_action()) {
            for item in items {
                let toml::Value::String(text) = item else {
                    return Err(type_error("a list of strings"));
                };
                injected.push(OsString::from(format!("{flag}={text}")));
            }
        } else if matches!(arg.get_action(), ArgAction::SetTrue) {
            match value {
                toml::Value::Boolean(true) => injected.push(OsString::from(&flag)),
                toml::Value::Boolean(false) => {}
                _ => return Err(type_error("true or false")),
            }
        } else {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => return Err(type_error("a string, a number or a boolean")),
            };
            injected.push(OsString::from(format!("{flag}={text}")));
        }
        from_file.flags.push((flag, key.clone()));
    }
    // The file's flags go right after the subcommand's name.
    let at = args
        .iter()
        .skip(1)
        .position(|a| a == name)
        .map_or(args.len(), |i| i + 2);
    let mut out = args;
    out.splice(at..at, injected);
    Ok((out, from_file))
}

fn read(path: &Path) -> Result<toml::Table, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| {
        // Only where and what: toml's own message quotes the line, which
        // may hold a password.
        let offset = e.span().map_or(0, |s| s.start).min(text.len());
        let before = &text[..text.floor_char_boundary(offset)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigFileError::Syntax {
            path: path.to_owned(),
            line,
            column,
            message: e.message().to_owned(),
        }
    })
}

fn known_keys(serve: &clap::Command) -> String {
    serve
        .get_arguments()
        .filter(|a| a.get_long().is_some() && !NOT_SETTINGS.contains(&a.get_id().as_str()))
        .map(|a| a.get_id().as_str().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

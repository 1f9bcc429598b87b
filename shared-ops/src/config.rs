//! Settings read from environment variables through clap's declarations, the same way in both
//! services: a service declares each variable once (a clap argument with its `env` name, default
//! and value parser) and [`read_variables`] fills it from a lookup function, so the binary reads
//! the process environment and tests read their own map through the same parsers.

use std::ffi::OsString;

use clap::{
    Parser,
    error::{ContextKind, ContextValue},
};

/// A variable whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidVariable {
    /// The variable, e.g. `PORT` (`configuration` when clap cannot tell which).
    pub name: String,
    /// What is wrong: the value parser's message.
    pub reason: String,
}

/// Parses `V` from the variables `lookup` finds: each declared `env` name with a non-blank value
/// becomes the argument `--<long>=<trimmed value>`. Clap's own reading of the process
/// environment is switched off, so the result depends on `lookup` alone. A clap error becomes a
/// [`InvalidVariable`] naming the variable, with the value parser's message as the reason (never
/// clap's multi-line usage text).
pub fn read_variables<V: Parser>(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<V, InvalidVariable> {
    let mut args = vec![OsString::from("settings")];
    // (long argument name, variable name) of every declared variable.
    let mut declared: Vec<(String, String)> = Vec::new();
    let command = V::command().mut_args(|arg| {
        let long = arg.get_long().map(str::to_owned);
        let name = arg
            .get_env()
            .and_then(|name| name.to_str())
            .map(str::to_owned);
        let (Some(long), Some(name)) = (long, name) else {
            return arg;
        };
        let value = lookup(&name)
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty());
        if let Some(value) = value {
            args.push(format!("--{long}={value}").into());
        }
        declared.push((long, name));
        arg.env(None::<&'static str>)
    });
    command
        .try_get_matches_from(args)
        .and_then(|mut matches| V::from_arg_matches_mut(&mut matches))
        .map_err(|error| {
            let arg = match error.get(ContextKind::InvalidArg) {
                Some(ContextValue::String(arg)) => arg.as_str(),
                _ => "",
            };
            // Clap names the argument as `--<long> <VALUE>`.
            let long = arg
                .trim_start_matches('-')
                .split([' ', '='])
                .next()
                .unwrap_or_default();
            let name = declared
                .iter()
                .find(|(declared_long, _)| declared_long == long)
                .map_or("configuration", |(_, name)| name.as_str());
            let reason = std::error::Error::source(&error).map_or_else(
                || error.kind().as_str().unwrap_or("unusable value").to_owned(),
                ToString::to_string,
            );
            InvalidVariable {
                name: name.to_owned(),
                reason,
            }
        })
}

//! `--config FILE` (or `DMQ_CONFIG`): settings from a TOML file, with the lowest precedence.
//!
//! Keys are the subcommand's long flag names (`node-id` or `node_id`), at the top level or in
//! a table named after the subcommand (`[controller]`, `[broker]`; the table wins). Each value
//! becomes the flag's `DMQ_*` variable unless that variable is already set, so clap then applies
//! flag > variable > file > default. An unknown key is an error: a typo must not be silently
//! ignored.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::CliError;

/// The config file named on the command line (`--config F`, `--config=F`) or in `DMQ_CONFIG`.
pub fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("DMQ_CONFIG").map(PathBuf::from)
}

/// The subcommand the arguments run (the first argument naming one), if any.
pub fn subcommand_name(args: &[OsString]) -> Option<String> {
    let cmd = Cli::command();
    args.iter()
        .skip(1)
        .map(|a| a.to_string_lossy().to_string())
        .find(|a| cmd.find_subcommand(a).is_some())
}

/// The `DMQ_*` variables the file sets for `subcommand`, as (variable, value); refuses keys
/// that are not flags of that subcommand.
pub fn settings(
    path: &Path,
    text: &str,
    subcommand: &str,
) -> Result<Vec<(String, String)>, CliError> {
    let usage = |m: String| CliError::Usage(format!("{}: {m}", path.display()));
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| usage(e.message().to_string()))?;
    let cmd = Cli::command();
    let sub = cmd
        .find_subcommand(subcommand)
        .ok_or_else(|| usage(format!("`dmq {subcommand}` takes no config file")))?;
    let mut values: Vec<(String, toml::Value)> = Vec::new();
    for (k, v) in &table {
        if !v.is_table() {
            values.push((k.clone(), v.clone()));
        }
    }
    match table.get(subcommand) {
        Some(toml::Value::Table(t)) => values.extend(t.iter().map(|(k, v)| (k.clone(), v.clone()))),
        Some(_) => return Err(usage(format!("[{subcommand}] must be a table"))),
        None => {}
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for (key, value) in values {
        let flag = key.replace('_', "-");
        let arg = sub
            .get_arguments()
            .chain(cmd.get_arguments())
            .find(|a| a.get_long() == Some(flag.as_str()) && a.get_env().is_some())
            .ok_or_else(|| {
                usage(format!(
                    "unknown setting `{key}` for `dmq {subcommand}`; settings are its long flag names \
                     (see `dmq {subcommand} --help`)"
                ))
            })?;
        let env = arg
            .get_env()
            .expect("checked")
            .to_string_lossy()
            .to_string();
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => return Err(usage(format!("`{key}` cannot be {}", other.type_str()))),
        };
        out.retain(|(e, _)| *e != env);
        out.push((env, text));
    }
    Ok(out)
}

/// Reads the config file, if any, and sets the variables it provides that are not set yet.
/// Must run before any other thread starts (it changes the process environment).
pub fn apply(args: &[OsString]) -> Result<(), CliError> {
    let Some(path) = config_path(args) else {
        return Ok(());
    };
    let Some(sub) = subcommand_name(args) else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CliError::Usage(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))
    })?;
    for (env, value) in settings(&path, &text, &sub)? {
        if std::env::var_os(&env).is_none() {
            // SAFETY: called at the very start of main, before any thread exists.
            unsafe { std::env::set_var(&env, value) };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn finds_the_file_and_the_subcommand() {
        let a = os(&[
            "dmq",
            "--log-format",
            "json",
            "controller",
            "--config",
            "/etc/dmq.toml",
        ]);
        assert_eq!(config_path(&a), Some(PathBuf::from("/etc/dmq.toml")));
        assert_eq!(subcommand_name(&a).as_deref(), Some("controller"));
        assert_eq!(
            config_path(&os(&["dmq", "broker", "--config=x.toml"])),
            Some(PathBuf::from("x.toml"))
        );
    }

    #[test]
    fn maps_keys_to_variables_with_the_table_winning() {
        let text = r#"
            data-dir = "/top"
            tick_ms = 20
            [controller]
            data-dir = "/var/lib/dmq"
            node-id = 2
            peers = ["1=a:1/a:2", "2=b:1/b:2"]
        "#;
        let s = settings(Path::new("f.toml"), text, "controller").unwrap();
        let get = |k: &str| s.iter().find(|(e, _)| e == k).map(|(_, v)| v.clone());
        assert_eq!(get("DMQ_DATA_DIR").as_deref(), Some("/var/lib/dmq"));
        assert_eq!(get("DMQ_TICK_MS").as_deref(), Some("20"));
        assert_eq!(get("DMQ_NODE_ID").as_deref(), Some("2"));
        assert_eq!(get("DMQ_PEERS").as_deref(), Some("1=a:1/a:2,2=b:1/b:2"));
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_refused_with_the_file_named() {
        let e = settings(Path::new("f.toml"), "nod-id = 1", "controller")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f.toml") && e.contains("unknown setting `nod-id`"),
            "{e}"
        );
        let e = settings(Path::new("f.toml"), "node-id = ", "controller")
            .unwrap_err()
            .to_string();
        assert!(e.contains("f.toml"), "{e}");
    }
}
